// Bearer-token authentication for every RPC.
//
// Wire format: request metadata `authorization: Bearer <token>`. The token is
// a shared secret of the training run, read from a file (--auth_token_file) or
// the DD_AUTH_TOKEN environment variable, never from a flag value that `ps`
// would show.
//
// Two kinds of bearer value are accepted:
//   - the run token: lets a process join the run and use the read-only
//     calls; it does not act as any peer;
//   - a peer credential (common/crypto/peer_credential.h), issued by the
//     coordinator at Join: names one peer, which every peer RPC then acts
//     for, whatever the request body says.
//
// Server side, TokenAuthProcessor is installed on the server credentials (TLS
// or, for plain text, gRPC's loopback-only local credentials; see
// security.h). gRPC runs it before any handler, so no service can forget the
// check; calls with neither a valid run token nor a valid credential end
// with UNAUTHENTICATED. Services then read who called from the same call's
// metadata with CallerOf(). (Not from AuthContext properties: gRPC keeps
// one AuthContext per connection, and connections are shared by the
// channels of a process, so a property set for one call shows on others.) The standard health service stays
// open so load balancers and probes work without the secret. Client side,
// every channel made by MakeChannel() attaches the header of its CallToken
// through an interceptor.
#ifndef COMMON_RPC_AUTH_H_
#define COMMON_RPC_AUTH_H_

#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/client_interceptor.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/crypto/peer_credential.h"
#include "common/rpc/caller.h"
#include "common/rpc/ip_address.h"

namespace dd {

// Environment variable read when no token file is given.
inline constexpr char kAuthTokenEnvVar[] = "DD_AUTH_TOKEN";

// Method-path prefix that never needs a token (grpc.health.v1).
inline constexpr char kHealthServicePathPrefix[] = "/grpc.health.v1.Health/";

// Returns the token from `token_file` if it is not empty, else from the
// environment variable DD_AUTH_TOKEN. Trailing whitespace (the newline of
// `echo secret > file`) is removed. NotFound when neither is set;
// InvalidArgument when the token is empty, shorter than 16 characters or
// contains characters not allowed in an HTTP header value.
absl::StatusOr<std::string> LoadAuthToken(const std::string& token_file);

// Compares two secrets in time that depends on neither their contents nor
// their lengths (both are hashed first, then compared with CRYPTO_memcmp).
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

// The bearer value a client sends: the run token until the process joins,
// then its peer credential (refreshed as it nears expiry). Shared by every
// channel of the process, so swapping it takes effect on all of them.
class CallToken {
 public:
  explicit CallToken(std::string run_token) : run_token_(std::move(run_token)) {}

  // The run token given at construction.
  const std::string& run_token() const { return run_token_; }
  // Sends `credential` from now on (empty: the run token again).
  void SetPeerCredential(std::string credential) ABSL_LOCKS_EXCLUDED(mu_);
  std::string peer_credential() const ABSL_LOCKS_EXCLUDED(mu_);
  // "Bearer <credential or run token>"; empty when both are empty.
  std::string HeaderValue() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const std::string run_token_;
  mutable absl::Mutex mu_;
  std::string peer_credential_ ABSL_GUARDED_BY(mu_);
};

// Server side: the verifier of peer credentials. A trainer learns the
// coordinator's public key only when it joins, after its server started, so
// the verifier can be set late; until then credentials are refused.
class PeerVerifierSlot {
 public:
  void Set(std::shared_ptr<const CredentialVerifier> verifier) ABSL_LOCKS_EXCLUDED(mu_);
  std::shared_ptr<const CredentialVerifier> Get() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<const CredentialVerifier> verifier_ ABSL_GUARDED_BY(mu_);
};

// Checks `authorization: Bearer <run token or peer credential>` on every
// call except the health service. The header stays in the call's metadata
// for CallerOf(). Non-blocking: a string comparison or one Ed25519
// verification.
class TokenAuthProcessor : public grpc::AuthMetadataProcessor {
 public:
  // `run_token` must not be empty. `verifier` may be null (credentials are
  // then refused).
  TokenAuthProcessor(std::string run_token, std::shared_ptr<const PeerVerifierSlot> verifier);

  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& auth_metadata,
                       grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  const std::string expected_header_;  // "Bearer <token>"
  const std::shared_ptr<const PeerVerifierSlot> verifier_;
};

// Who made a call, from its metadata (ServerContext::client_metadata()), as
// TokenAuthProcessor verified it: a peer credential gives Caller::Peer, any
// other bearer value the run token. Caller::Unchecked() when the call has
// no `authorization` (possible only on a server that runs without
// authentication, --allow_unauthenticated, since the processor refuses
// such calls).
Caller CallerOf(const std::multimap<grpc::string_ref, grpc::string_ref>& client_metadata);

// CallerOf(context.client_metadata()) with Caller::remote_ip from
// context.peer().
Caller CallerOf(const grpc::ServerContextBase& context);

// Client interceptor factory that adds `authorization: <token's header>` to
// every call on a channel, unless the call set its own `authorization`.
class BearerTokenInterceptorFactory
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(std::shared_ptr<const CallToken> token);
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override;

 private:
  const std::shared_ptr<const CallToken> token_;
};

}  // namespace dd

#endif  // COMMON_RPC_AUTH_H_
