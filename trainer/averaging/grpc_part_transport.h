// GrpcPartTransport: PartTransport over the Averager gRPC service, with one
// channel per member address kept for later rounds (a peer meets the same
// members round after round).
#ifndef TRAINER_AVERAGING_GRPC_PART_TRANSPORT_H_
#define TRAINER_AVERAGING_GRPC_PART_TRANSPORT_H_

#include <grpcpp/channel.h>

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/rpc/security.h"
#include "trainer/averaging/part_transport.h"

namespace dd::averaging {

class GrpcPartTransport final : public PartTransport {
 public:
  // `security`: the token and TLS settings of the channels to other members.
  explicit GrpcPartTransport(SecurityConfig security);

  // PartTransport. The gRPC call's deadline is `deadline`; a channel that
  // cannot be made (bad TLS files) answers UNAVAILABLE.
  void Send(const std::string& address, const v1::ReducePartRequest* request,
            v1::ReducePartResponse* response, absl::Time deadline, Done done) override;

 private:
  std::shared_ptr<grpc::Channel> ChannelTo(const std::string& address);

  // Fixed after construction.
  const SecurityConfig security_;

  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dd::averaging

#endif  // TRAINER_AVERAGING_GRPC_PART_TRANSPORT_H_
