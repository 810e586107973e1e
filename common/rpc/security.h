// Transport security shared by servers and clients: the run's bearer token
// and optional TLS certificate files.
//
// Servers: with --tls_cert and --tls_key they serve TLS (and, with --tls_ca,
// also verify client certificates that are presented). Without certificates
// they serve plain text to loopback clients only (gRPC's LOCAL_TCP
// credentials refuse other peers), so a forgotten flag can never expose an
// unencrypted service to the network. Either way the token is checked on
// every call except health checks.
//
// Clients: TLS when any TLS file is given (--tls_ca verifies the server;
// --tls_cert/--tls_key present a client certificate), plain text otherwise,
// and plain text only to loopback addresses unless --insecure says so: a
// bearer token must not cross the network in clear (our own servers refuse
// plain-text peers that are not local anyway, so only an impostor at that
// address would ever read it).
#ifndef COMMON_RPC_SECURITY_H_
#define COMMON_RPC_SECURITY_H_

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace dd {

class CallToken;
class PeerVerifierSlot;

struct SecurityConfig {
  // The shared secret; empty only when `allow_unauthenticated` is set.
  std::string auth_token;
  // Serve (or call) without a token. Only for throw-away local experiments;
  // servers log a warning.
  bool allow_unauthenticated = false;
  // Client: allow plain text to addresses that are not loopback.
  bool insecure = false;
  std::string tls_cert_file;  // PEM certificate chain
  std::string tls_key_file;   // PEM private key
  std::string tls_ca_file;    // PEM root certificates
  // Client: when set, channels send this token's current value (the run
  // token, then the peer credential once the process joined) instead of
  // `auth_token`.
  std::shared_ptr<CallToken> call_token;
  // Server: when set, peer credentials verified by it are accepted besides
  // the run token.
  std::shared_ptr<PeerVerifierSlot> peer_verifier;

  bool UsesTls() const {
    return !tls_cert_file.empty() || !tls_key_file.empty() || !tls_ca_file.empty();
  }
};

// Reads --auth_token_file (or DD_AUTH_TOKEN), --tls_cert, --tls_key, --tls_ca
// and --allow_unauthenticated (flags defined in security.cc). Fails with a
// message naming the missing or unreadable input.
absl::StatusOr<SecurityConfig> SecurityConfigFromFlags();

// Server credentials for `config` with the token check installed.
// InvalidArgument when only one of cert/key is given; NotFound or
// PermissionDenied naming the file that cannot be read; FailedPrecondition
// when there is no token and unauthenticated serving was not allowed.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const SecurityConfig& config);

// True for "localhost", 127.0.0.0/8 and [::1] targets ("host:port", with an
// optional "ipv4:"/"ipv6:"/"dns:///" scheme) and unix sockets.
bool IsLoopbackTarget(const std::string& target);

// Channel credentials for `config` (TLS or plain text; the token is attached
// by MakeChannel's interceptor, not here).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const SecurityConfig& config);

}  // namespace dd

#endif  // COMMON_RPC_SECURITY_H_
