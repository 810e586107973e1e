// PartTransport: how a butterfly member's parts reach the other members'
// reducers. One implementation speaks gRPC (grpc_part_transport.h); an
// in-memory one hands parts straight to other members' ReducerRegistry
// objects in the same process (local_part_transport.h), so the butterfly's
// schedule, faults and results are tested without servers.
#ifndef TRAINER_AVERAGING_PART_TRANSPORT_H_
#define TRAINER_AVERAGING_PART_TRANSPORT_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "protos/averaging.pb.h"

namespace dd::averaging {

namespace v1 = ::distdiff::averaging::v1;

class PartTransport {
 public:
  using Done = std::function<void(const absl::Status&)>;
  virtual ~PartTransport() = default;

  // Sends `request` to the reducer of the member at `address`; its answer
  // goes into `response`. Both must stay valid until `done` runs, exactly
  // once, on some other thread or on this one before Send returns (so the
  // caller must not hold a lock that `done` takes). The status is the
  // reducer's (ReducerRegistry::ReducePart's codes), or DEADLINE_EXCEEDED
  // when no answer came by `deadline`, or UNAVAILABLE when the member cannot
  // be reached. Never blocks for the answer.
  virtual void Send(const std::string& address, const v1::ReducePartRequest* request,
                    v1::ReducePartResponse* response, absl::Time deadline, Done done) = 0;
};

}  // namespace dd::averaging

#endif  // TRAINER_AVERAGING_PART_TRANSPORT_H_
