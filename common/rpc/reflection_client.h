// A minimal client of gRPC server reflection (grpc.reflection.v1alpha, what
// gRPC 1.51 serves): lists a server's services and calls its methods from
// JSON, as `grpcurl list` and `grpcurl -d JSON ADDRESS METHOD` do, with the
// descriptors the server sends (no generated code of its services). Used by
// rpc_probe, dd_grpcurl and by tests that check every server is inspectable.
#ifndef COMMON_RPC_REFLECTION_CLIENT_H_
#define COMMON_RPC_REFLECTION_CLIENT_H_

#include <grpcpp/channel.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dd {

// Request headers sent with each call (name, value), e.g. authorization.
using CallHeaders = std::vector<std::pair<std::string, std::string>>;

// Returns the fully-qualified names of the services the server at the other
// end of `channel` lists through reflection. Errors carry the RPC's status
// (UNAUTHENTICATED without the right token, UNAVAILABLE when unreachable).
absl::StatusOr<std::vector<std::string>> ListServicesByReflection(
    const std::shared_ptr<grpc::Channel>& channel,
    absl::Duration timeout = absl::Seconds(10), const CallHeaders& headers = {});

// Calls `method` ("package.Service/Method" or "package.Service.Method") with
// the request given as JSON (protobuf's JSON mapping; "" is the empty
// message), learning the service's types through reflection. Returns each
// response as JSON (one for a unary method, one per message for a
// server-streaming one; client streaming is not supported). Errors:
// NOT_FOUND for a method the server does not list, INVALID_ARGUMENT for
// JSON that does not fit the request type, otherwise the call's status.
absl::StatusOr<std::vector<std::string>> CallByReflection(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
    const std::string& request_json, const CallHeaders& headers = {},
    absl::Duration timeout = absl::Seconds(10));

}  // namespace dd

#endif  // COMMON_RPC_REFLECTION_CLIENT_H_
