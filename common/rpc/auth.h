// Bearer-token authentication for every RPC.
//
// Wire format: request metadata `authorization: Bearer <token>`. The token is
// a shared secret of the training run, read from a file (--auth_token_file) or
// the DD_AUTH_TOKEN environment variable, never from a flag value that `ps`
// would show.
//
// Server side, TokenAuthProcessor is installed on the server credentials (TLS
// or, for plain text, gRPC's loopback-only local credentials; see
// security.h). gRPC runs it before any handler, so no service can forget the
// check; calls without the right token end with UNAUTHENTICATED. The standard
// health service stays open so load balancers and probes work without the
// secret. Client side, every channel made by MakeChannel() attaches the
// header through an interceptor.
#ifndef COMMON_RPC_AUTH_H_
#define COMMON_RPC_AUTH_H_

#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/support/client_interceptor.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

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

// Checks `authorization: Bearer <token>` on every call except the health
// service. Non-blocking: it only compares strings.
class TokenAuthProcessor : public grpc::AuthMetadataProcessor {
 public:
  // `token` must not be empty.
  explicit TokenAuthProcessor(std::string token);

  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& auth_metadata,
                       grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  const std::string expected_header_;  // "Bearer <token>"
};

// Client interceptor factory that adds `authorization: Bearer <token>` to
// every call on a channel.
class BearerTokenInterceptorFactory
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(std::string token);
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override;

 private:
  const std::string header_value_;
};

}  // namespace dd

#endif  // COMMON_RPC_AUTH_H_
