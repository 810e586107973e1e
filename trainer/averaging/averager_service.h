// AveragerService: the gRPC face of a member's reducers
// (distdiff.averaging.v1.Averager). For each round this member takes part in,
// ButterflyAllReduce registers the SpanReducer of its span; ReducePart calls
// are validated here (membership, span, codec, sizes, decodable and finite
// data) and handed to the reducer, whose outcome finishes the call. Nothing
// blocks a gRPC thread: a call waiting for other members simply stays open.
//
// Members learn of a round at slightly different moments, so a part may
// arrive before this member has registered the round. Such a part is held
// (up to `early_part_wait`, and up to `max_held_bytes` in all) and served when
// the round registers, instead of being refused and sent again.
#ifndef TRAINER_AVERAGING_AVERAGER_SERVICE_H_
#define TRAINER_AVERAGING_AVERAGER_SERVICE_H_

#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "protos/averaging.grpc.pb.h"
#include "trainer/averaging/span_reducer.h"

namespace dd::averaging {

namespace v1 = ::distdiff::averaging::v1;

class AveragerService final : public v1::Averager::CallbackService {
 public:
  // `early_part_wait`: how long a part for a round not registered here yet
  // is held before it is answered NOT_FOUND (zero: at once); a part that
  // would take the held parts' data past `max_held_bytes` is answered
  // NOT_FOUND at once.
  explicit AveragerService(absl::Duration early_part_wait = absl::Seconds(2),
                           size_t max_held_bytes = size_t{64} << 20);
  // Answers every held part (UNAVAILABLE); the server must already be shut
  // down or about to be, as for any service.
  ~AveragerService() override;

  // Starts answering for `round_id`: members by index, this member's index,
  // and the reducer of its span. Parts already held for it are served.
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
  // A part that arrived before its round was registered.
  struct HeldPart {
    grpc::ServerUnaryReactor* reactor;
    const v1::ReducePartRequest* request;
    v1::ReducePartResponse* response;
    absl::Time expires;
  };
  static constexpr size_t kFinishedRoundsKept = 64;

  // Checks membership and data, then hands the part to the round's reducer.
  void Serve(grpc::ServerUnaryReactor* reactor, const v1::ReducePartRequest* request,
             v1::ReducePartResponse* response);
  // Answers held parts NOT_FOUND as they expire, until the service ends.
  void ExpireHeldParts();

  const absl::Duration early_part_wait_;
  const size_t max_held_bytes_;

  absl::Mutex mu_;
  // In arrival order, so also in expiry order.
  std::deque<HeldPart> held_ ABSL_GUARDED_BY(mu_);
  size_t held_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::map<uint64_t, Round> rounds_ ABSL_GUARDED_BY(mu_);
  std::set<uint64_t> finished_ ABSL_GUARDED_BY(mu_);
  std::deque<uint64_t> finished_order_ ABSL_GUARDED_BY(mu_);

  std::thread expirer_;  // runs ExpireHeldParts; last, so it starts last
};

}  // namespace dd::averaging

#endif  // TRAINER_AVERAGING_AVERAGER_SERVICE_H_
