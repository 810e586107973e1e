// AveragerService: the gRPC face (distdiff.averaging.v1.Averager) of a
// member's ReducerRegistry, which holds the reducers, the checks and the
// error codes (reducer_registry.h). Nothing blocks a gRPC thread: a call
// waiting for other members simply stays open until its part is reduced.
#ifndef TRAINER_AVERAGING_AVERAGER_SERVICE_H_
#define TRAINER_AVERAGING_AVERAGER_SERVICE_H_

#include <functional>

#include "absl/time/time.h"
#include "protos/averaging.grpc.pb.h"
#include "trainer/averaging/reducer_registry.h"

namespace dd::averaging {

class AveragerService final : public v1::Averager::CallbackService {
 public:
  // Arguments as ReducerRegistry's.
  explicit AveragerService(absl::Duration early_part_wait = absl::Seconds(2),
                           size_t max_held_bytes = size_t{64} << 20);
  // Answers every held part (UNAVAILABLE); the server must already be shut
  // down or about to be, as for any service.
  ~AveragerService() override = default;

  // Where rounds are registered (ButterflyAllReduce).
  ReducerRegistry* registry() { return &registry_; }

  // Security tests only: every answer passes through `tamper` before it is
  // sent, so a real process can act as a dishonest reducer. Call before
  // the server starts.
  using Tamper = std::function<void(const v1::ReducePartRequest&, v1::ReducePartResponse*)>;
  void TamperWithAnswersForTest(Tamper tamper) { tamper_ = std::move(tamper); }

  // ReducerRegistry::ReducePart's codes, as gRPC status codes.
  grpc::ServerUnaryReactor* ReducePart(grpc::CallbackServerContext* context,
                                       const v1::ReducePartRequest* request,
                                       v1::ReducePartResponse* response) override;

 private:
  ReducerRegistry registry_;
  Tamper tamper_;  // set before serving
};

}  // namespace dd::averaging

#endif  // TRAINER_AVERAGING_AVERAGER_SERVICE_H_
