// Client channels and call contexts with the project's defaults.
#ifndef COMMON_RPC_CHANNEL_H_
#define COMMON_RPC_CHANNEL_H_

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/rpc/security.h"

namespace dd {

// Deadline given to unary calls unless the caller chooses another.
inline constexpr absl::Duration kDefaultRpcDeadline = absl::Seconds(30);

// Creates a channel to `target` ("host:port") with the shared keepalive and
// message-size settings (keepalive.h), TLS per `security`, and the bearer
// token attached to every call. Connecting is lazy; errors here are only
// configuration errors (unreadable certificate files), and
// FailedPrecondition for a channel that would send a token in plain text to
// a target that is not loopback (see security.h; SecurityConfig::insecure).
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(
    const std::string& target, const SecurityConfig& security);

// A ClientContext whose deadline is `timeout` from now. Every unary call uses
// one; streams choose their own deadline or none.
std::unique_ptr<grpc::ClientContext> MakeCallContext(
    absl::Duration timeout = kDefaultRpcDeadline, bool wait_for_ready = false);

}  // namespace dd

#endif  // COMMON_RPC_CHANNEL_H_
