// A minimal client of gRPC server reflection (grpc.reflection.v1alpha, what
// gRPC 1.51 serves): lists a server's services, as `grpcurl list` does. Used by
// rpc_probe and by tests that check every server is inspectable.
#ifndef COMMON_RPC_REFLECTION_CLIENT_H_
#define COMMON_RPC_REFLECTION_CLIENT_H_

#include <grpcpp/channel.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dd {

// Returns the fully-qualified names of the services the server at the other
// end of `channel` lists through reflection. Errors carry the RPC's status
// (UNAUTHENTICATED without the right token, UNAVAILABLE when unreachable).
absl::StatusOr<std::vector<std::string>> ListServicesByReflection(
    const std::shared_ptr<grpc::Channel>& channel,
    absl::Duration timeout = absl::Seconds(10));

}  // namespace dd

#endif  // COMMON_RPC_REFLECTION_CLIENT_H_
