// In-memory fakes of the interfaces a PeerSession talks to (peer_links.h),
// for tests that run N peers as threads in one process:
//   FakeCollaboration  the coordinator's round logic (the real RoundPlanner),
//                      an exact in-memory all-reduce (optionally through a
//                      real codec), and a registry of published states;
//   FakeModel          a quadratic model: the gradient of a sample keyed k
//                      is w − c(k), so every result has a closed form;
//   FakeBatches        numbered batches of keys "<peer>-<n>".
#ifndef TRAINER_COLLAB_TESTING_FAKE_PEER_LINKS_H_
#define TRAINER_COLLAB_TESTING_FAKE_PEER_LINKS_H_

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/coordinator/rounds/round_planner.h"
#include "trainer/collab/peer_links.h"

namespace dd::collab::testing {

// c(key)[i]: the point a sample pulls the weights toward.
float Target(const std::string& key, size_t i);

class FakeModel final : public LocalModel {
 public:
  FakeModel(size_t n, double lr) : w_(n, 0.0f), lr_(lr) {}
  absl::StatusOr<double> AccumulateBatch(const data::Batch& batch) override;
  int64_t accumulated_samples() const override { return samples_; }
  std::vector<std::string> AccumulatedKeys() const override { return keys_; }
  absl::StatusOr<std::vector<float>> AccumulatedGradient() const override;
  absl::StatusOr<training::StepReport> ApplyUpdate(const std::vector<float>* gradient,
                                                   bool local_finite) override;
  void DropAccumulated() override;
  int64_t num_elements() const override { return w_.size(); }
  absl::Status ReadParameters(std::vector<float>* out) const override;
  absl::Status WriteParameters(const std::vector<float>& values) override;
  absl::Status AddToParameters(const std::vector<float>& delta) override;
  int64_t step() const override { return step_; }
  void SetStep(int64_t step) override { step_ = step; }
  std::string ParameterHash() const override;
  absl::StatusOr<std::string> ExportState(const StateExtras& extras) const override;
  absl::Status ImportState(const std::string& bytes, StateExtras* extras) override;
  absl::Status RecordMetrics(const training::StepReport&, const std::map<std::string, double>& extra) override;
  absl::StatusOr<std::string> SaveCheckpoint() override { return std::string("fake-checkpoint"); }
  absl::StatusOr<std::string> WriteSamples() override { return std::string("fake-samples"); }

  const std::vector<float>& weights() const { return w_; }
  // Fault tests: after the update that makes the step `step`, one weight is
  // changed, as a bit flip or a miscomputing device would.
  void CorruptAfterStepForTest(int64_t step) { corrupt_after_step_ = step; }
  // Metrics rows recorded (their "extra" maps).
  std::vector<std::map<std::string, double>> metrics;

 private:
  std::vector<float> w_;
  const double lr_;
  int64_t corrupt_after_step_ = -1;
  std::vector<double> grad_sum_;
  int64_t samples_ = 0;
  std::vector<std::string> keys_;
  double loss_sum_ = 0;
  int64_t step_ = 0;
};

class FakeBatches final : public BatchSource {
 public:
  // Each batch takes `delay` (a slower peer's step time).
  FakeBatches(std::string peer, int batch_size, absl::Duration delay = absl::ZeroDuration())
      : peer_(std::move(peer)), batch_size_(batch_size), delay_(delay) {}
  absl::StatusOr<data::Batch> Next() override;
  int64_t handed_out() const { return next_; }

 private:
  const std::string peer_;
  const int batch_size_;
  const absl::Duration delay_;
  std::atomic<int64_t> next_{0};
};

// One run's coordinator, averaging and state registry, shared by the
// peers' links (all thread-safe).
class FakeCollaboration {
 public:
  FakeCollaboration(uint64_t target_batch_size, averaging::CodecId codec = averaging::CodecId::kNone);
  ~FakeCollaboration();

  // The links of peer `peer_id` (owned by the collaboration).
  CoordinatorLink* Coordinator(const std::string& peer_id);
  RoundAverager* Averager(const std::string& peer_id);
  StateExchange* States(const std::string& peer_id);

  // Rounds with these ids fail on every member.
  void FailRound(uint64_t round_id);
  // Rounds with these ids are abandoned by every member (Aborted, as when
  // an audit finds a reduction dishonest).
  void AbandonRound(uint64_t round_id);
  // FetchNewer calls so far.
  int fetches();
  // Sample grids the peers uploaded: "peer step path", in order.
  std::vector<std::string> uploads();
  void RecordUpload(const std::string& peer_id, uint64_t step, const std::string& path);
  // The global step each peer's last report named, and the peers other than
  // `peer_id` whose last report named one below `step`, or that never
  // reported (CoordinatorLink::PeersBehind).
  void RecordReportedStep(const std::string& peer_id, uint64_t step);
  // The coordinator no longer knows `peer_id` (evicted): its reports fail
  // NOT_FOUND, as the real one's do.
  void Evict(const std::string& peer_id);
  // Another process joined as `peer_id`: this one's reports and
  // heartbeats fail FAILED_PRECONDITION ("superseded"), as the real
  // coordinator's do.
  void Supersede(const std::string& peer_id);
  // The coordinator tells `peer_id` that its weights diverged only in the
  // answer that also hands it a round it is a member of (the verdict came
  // after the round opened: a real coordinator's timing, made certain).
  // Until then its reports count as undiverged.
  void DelayDivergedVerdictUntilARound(const std::string& peer_id);
  bool DelaysDivergedVerdict(const std::string& peer_id);
  // True (and no longer delayed) when the answer hands it a round.
  bool ReleaseDivergedVerdict(const std::string& peer_id, bool in_a_round);
  // CheckMembership's answer for `peer_id`.
  absl::Status Membership(const std::string& peer_id);
  size_t PeersBehind(const std::string& peer_id, uint64_t step);
  // Each Average call sleeps this long first (a slow network).
  void SetRoundDelay(absl::Duration d);
  // The states `peer_id` serves have one weight changed (a lying donor's:
  // well-formed, finite, not the collaboration's), and it answers a fetch
  // first until the fetching peer refuses it.
  void AlterStatesServedBy(const std::string& peer_id);
  coordinator::RoundPlanner& planner() { return planner_; }

  // The in-memory all-reduce: waits for every member of the round, then
  // returns the weighted mean of their values (each through the codec,
  // the mean through it once more, span by span as the members' reducers
  // do, with each reducer's mean residual), exactly as every member sees it.
  absl::StatusOr<averaging::AllReduceResult> Average(const std::string& peer_id,
                                                     const cv1::Round& round,
                                                     std::vector<float>* values, double weight,
                                                     averaging::CodecErrors errors);
  // As the real state service: a `current` snapshot is served to new
  // fetches at once until StopServingCurrent; another only to the fetches
  // that asked for it before it was published.
  void Publish(const std::string& peer_id, StateExchange::Snapshot s, bool current);
  void StopServingCurrent(const std::string& peer_id);
  bool Wanted(const std::string& peer_id);
  absl::StatusOr<StateExchange::Snapshot> FetchNewer(const std::string& peer_id, uint64_t step,
                                                     const std::set<std::string>& refused);

 private:
  struct RoundData {
    std::map<std::string, std::pair<std::vector<float>, double>> parts;
    std::map<std::string, float*> mean_errors;  // by member (it waits while they are used)
    std::vector<float> mean;
    bool averaged = false;
  };
  class Links;

  coordinator::RoundPlanner planner_;
  const averaging::CodecId codec_;
  absl::Mutex mu_;
  std::map<uint64_t, RoundData> rounds_ ABSL_GUARDED_BY(mu_);
  std::set<uint64_t> failing_ ABSL_GUARDED_BY(mu_);
  std::set<uint64_t> abandoned_ ABSL_GUARDED_BY(mu_);
  int fetches_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> uploads_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> reported_steps_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> evicted_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> superseded_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> verdicts_delayed_ ABSL_GUARDED_BY(mu_);
  absl::Duration delay_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();
  std::map<std::string, StateExchange::Snapshot> snapshots_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> wanted_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> serving_current_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> lying_donors_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::unique_ptr<Links>> links_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dd::collab::testing

#endif  // TRAINER_COLLAB_TESTING_FAKE_PEER_LINKS_H_
