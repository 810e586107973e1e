// Client of the standard gRPC health protocol (grpc.health.v1).
#ifndef COMMON_RPC_HEALTH_CLIENT_H_
#define COMMON_RPC_HEALTH_CLIENT_H_

#include <grpcpp/channel.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dd {

// Asks the server behind `channel` whether `service` (empty: the whole
// server) is SERVING. Returns true/false for an answer; the RPC's error
// (UNAVAILABLE, DEADLINE_EXCEEDED, NOT_FOUND for an unknown service)
// otherwise. Needs no token.
absl::StatusOr<bool> CheckHealth(const std::shared_ptr<grpc::Channel>& channel,
                                 const std::string& service,
                                 absl::Duration timeout);

}  // namespace dd

#endif  // COMMON_RPC_HEALTH_CLIENT_H_
