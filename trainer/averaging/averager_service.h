// AveragerService: the gRPC face of a member's reducers
// (distdiff.averaging.v1.Averager). For each round this member takes part in,
// ButterflyAllReduce registers the SpanReducer of its span; ReducePart calls
// are validated here (membership, span, codec, sizes, decodable and finite
// data) and handed to the reducer, whose outcome finishes the call. Nothing
// blocks a gRPC thread: a call waiting for other members simply stays open.
#ifndef TRAINER_AVERAGING_AVERAGER_SERVICE_H_
#define TRAINER_AVERAGING_AVERAGER_SERVICE_H_

#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "protos/averaging.grpc.pb.h"
#include "trainer/averaging/span_reducer.h"

namespace dd::averaging {

namespace v1 = ::distdiff::averaging::v1;

class AveragerService final : public v1::Averager::CallbackService {
 public:
  // Starts answering for `round_id`: members by index, this member's index,
  // and the reducer of its span.
  void RegisterRound(uint64_t round_id, std::vector<std::string> peer_ids, uint32_t my_index,
                     std::shared_ptr<SpanReducer> reducer);

  // Ends the round: its reducer finishes; later calls for it get
  // FAILED_PRECONDITION.
  void EndRound(uint64_t round_id);

  grpc::ServerUnaryReactor* ReducePart(grpc::CallbackServerContext* context,
                                       const v1::ReducePartRequest* request,
                                       v1::ReducePartResponse* response) override;

 private:
  struct Round {
    std::vector<std::string> peer_ids;
    uint32_t my_index;
    std::shared_ptr<SpanReducer> reducer;
  };
  static constexpr size_t kFinishedRoundsKept = 64;

  absl::Mutex mu_;
  std::map<uint64_t, Round> rounds_ ABSL_GUARDED_BY(mu_);
  std::set<uint64_t> finished_ ABSL_GUARDED_BY(mu_);
  std::deque<uint64_t> finished_order_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dd::averaging

#endif  // TRAINER_AVERAGING_AVERAGER_SERVICE_H_
