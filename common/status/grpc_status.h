// Conversion between absl::Status and grpc::Status.
//
// Both use the canonical code space (google.rpc.Code), so the mapping is
// one-to-one on codes; messages are carried unchanged up to a bound. Service adapters call
// ToGrpcStatus() on whatever their pure core returned; clients call
// FromGrpcStatus() so callers above them see absl::Status only.
#ifndef COMMON_STATUS_GRPC_STATUS_H_
#define COMMON_STATUS_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <cstddef>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dd {

// The most of a message ToGrpcStatus sends. gRPC carries the message in
// the call's trailing metadata, which a receiver refuses beyond 16 KiB
// (gRPC 1.51 then fails other calls on the same connection too), and a
// message may quote a field of the request that the caller chose.
inline constexpr size_t kMaxStatusMessageBytes = 1024;

// Returns the grpc::Status with the same code and message as `status`, the
// message cut to kMaxStatusMessageBytes (saying how much was cut).
grpc::Status ToGrpcStatus(const absl::Status& status);

// Returns the absl::Status with the same code and message as `status`.
// `context`, when not empty, is prefixed to the message ("context: message")
// so an error says which call failed.
absl::Status FromGrpcStatus(const grpc::Status& status,
                            absl::string_view context = "");

}  // namespace dd

#endif  // COMMON_STATUS_GRPC_STATUS_H_
