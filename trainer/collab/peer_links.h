// The five things a PeerSession talks to, each a small interface so the
// session's logic runs in unit tests against in-memory fakes
// (trainer/collab/testing) and in the trainer against the real parts
// (trainer/collab/peer.cc: the coordinator over gRPC, leased chunks, the
// butterfly all-reduce, the state service, training::Trainer).
#ifndef TRAINER_COLLAB_PEER_LINKS_H_
#define TRAINER_COLLAB_PEER_LINKS_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "protos/coordinator.pb.h"
#include "trainer/averaging/butterfly.h"
#include "trainer/data/data_loader.h"
#include "trainer/training/trainer.h"

namespace dd::collab {

namespace cv1 = ::distdiff::coordinator::v1;

// The coordinator, as one peer sees it (its identity is filled in).
class CoordinatorLink {
 public:
  virtual ~CoordinatorLink() = default;
  virtual std::string peer_id() const = 0;
  // Reports the samples trained toward `global_step` (and the hash of the
  // shared weights after the last step applied); the link fills in the
  // peer's identity. The response's `round` is set when a round newer than
  // `after_round_id` includes this peer (opened by this report or an earlier
  // one); `diverged` when its hash differs from the other members'.
  // FailedPrecondition when `global_step` is not the collaboration's (a
  // round went ahead without this peer).
  virtual absl::StatusOr<cv1::ReportProgressResponse> Report(
      const cv1::ReportProgressRequest& request) = 0;
  // The newest round after `after_round_id` that includes this peer.
  virtual absl::StatusOr<std::optional<cv1::Round>> GetRound(uint64_t after_round_id) = 0;
  // The collaboration's current global step.
  virtual absl::StatusOr<uint64_t> GlobalStep() = 0;
  // The hash of the shared weights after global step `step` as the members
  // of its round confirm it (GetStepHash in protos/coordinator.proto).
  virtual absl::StatusOr<cv1::GetStepHashResponse> StepHash(uint64_t step) = 0;
  // The other live peers whose last report named a global step below
  // `step` (they may still need a state of it).
  virtual absl::StatusOr<size_t> PeersBehind(uint64_t step) = 0;
  // This peer's training rate, sent with its heartbeats.
  virtual void SetSamplesPerSecond(double rate) = 0;
  // Sends a heartbeat now: OK while this process is the peer's current
  // incarnation; NotFound when the peer was evicted; FailedPrecondition
  // when another process joined as the same peer (this one is superseded).
  // Tells a report refused FailedPrecondition for being superseded from one
  // refused for a stale step.
  virtual absl::Status CheckMembership() = 0;
  // Hands the sample grid written at `path` for `step` to the coordinator's
  // status page (a preview: shrunk to at most 1024 px a side). Returns
  // whether the coordinator kept it.
  virtual absl::StatusOr<bool> UploadSampleGrid(uint64_t step, const std::string& path) = 0;
};

// The samples this peer trains on (the chunks it leased), batch by batch.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // The next batch. An error ends the session (e.g. no chunk for minutes).
  virtual absl::StatusOr<data::Batch> Next() = 0;
};

// Averages a vector with the other members of a round.
class RoundAverager {
 public:
  virtual ~RoundAverager() = default;
  // Averages `values` in place with weight `weight` over `round` (this
  // peer is one of its members), with error feedback through `errors`
  // (averaging::CodecErrors: what the codec dropped of this peer's values,
  // and of the means it reduced). Aborted when every honest member abandons
  // the round (an audit found a reduction dishonest): nobody applies it, so
  // there is no state of it to download.
  virtual absl::StatusOr<averaging::AllReduceResult> Average(const cv1::Round& round,
                                                             std::vector<float>* values,
                                                             double weight,
                                                             averaging::CodecErrors errors) = 0;
};

// Training states: this peer's served to others, others' fetched.
class StateExchange {
 public:
  struct Snapshot {
    uint64_t global_step = 0;
    std::string bytes;
    std::string donor;  // the peer id that served it
  };
  virtual ~StateExchange() = default;
  // True when another peer waits for this peer's state: publish one at the
  // next step boundary.
  virtual bool Wanted() const = 0;
  // Serves `snapshot`; with `current`, to new downloads at once until
  // StopServingCurrent (this peer is paused, e.g. resynchronising itself).
  virtual void Publish(Snapshot snapshot, bool current) = 0;
  virtual void StopServingCurrent() = 0;
  // Called at every step boundary (before Wanted) with the global step of
  // this peer's weights: peers waiting for a newer state than that learn
  // that this one has none, without a snapshot.
  virtual void AtStepBoundary(uint64_t global_step) = 0;
  // The state of a live peer that is ahead of `global_step`, from none of
  // the peers in `refused` (their states were not the collaboration's).
  // FailedPrecondition when the peers that answered are not ahead (nobody
  // applied the update this peer misses); NotFound when none could serve.
  // A peer that is not ahead says so before sending its state.
  virtual absl::StatusOr<Snapshot> FetchNewer(uint64_t global_step,
                                              const std::set<std::string>& refused) = 0;
};

// The peer's model and inner optimizer (training::Trainer in the trainer).
class LocalModel {
 public:
  using StateExtras = training::Trainer::StateExtras;
  virtual ~LocalModel() = default;
  virtual absl::StatusOr<double> AccumulateBatch(const data::Batch& batch) = 0;
  virtual int64_t accumulated_samples() const = 0;
  virtual std::vector<std::string> AccumulatedKeys() const = 0;
  virtual absl::StatusOr<std::vector<float>> AccumulatedGradient() const = 0;
  // An optimizer step with `gradient`, or the local one when null.
  virtual absl::StatusOr<training::StepReport> ApplyUpdate(const std::vector<float>* gradient,
                                                           bool local_finite) = 0;
  virtual void DropAccumulated() = 0;
  virtual int64_t num_elements() const = 0;
  virtual absl::Status ReadParameters(std::vector<float>* out) const = 0;
  virtual absl::Status WriteParameters(const std::vector<float>& values) = 0;
  // parameters += delta (one pass where the weights live: the outer step's
  // correction applied between local steps).
  virtual absl::Status AddToParameters(const std::vector<float>& delta) = 0;
  virtual int64_t step() const = 0;
  virtual void SetStep(int64_t step) = 0;
  virtual std::string ParameterHash() const = 0;
  virtual absl::StatusOr<std::string> ExportState(const StateExtras& extras) const = 0;
  virtual absl::Status ImportState(const std::string& bytes, StateExtras* extras) = 0;
  // Outputs (the round's designated writer makes them).
  virtual absl::Status RecordMetrics(const training::StepReport& report,
                                     const std::map<std::string, double>& extra) = 0;
  virtual absl::StatusOr<std::string> SaveCheckpoint() = 0;
  virtual absl::StatusOr<std::string> WriteSamples() = 0;
};

}  // namespace dd::collab

#endif  // TRAINER_COLLAB_PEER_LINKS_H_
