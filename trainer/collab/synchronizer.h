// Synchronizer: what a peer contributes to a round and how it applies the
// round's average; the one part of a PeerSession that differs between the
// run's sync modes (sync_config.h).
//
//   GradientSync  contributes the mean gradient it accumulated (weight =
//                 samples) and applies the averaged gradient with its
//                 optimizer: one optimizer step per global step.
//   OuterSync     applies a local optimizer step every
//                 gradient_accumulation_steps batches and contributes the
//                 pseudo-gradient Δ = θ − θ_local (+ error feedback) after
//                 at most H local steps; the average drives one outer
//                 Nesterov step of the global weights θ (OuterOptimizer).
//                 With overlap the local steps go on while the round runs,
//                 and their progress is carried onto the new θ
//                 (docs/architecture.md, "Outer steps").
//
// Every member applies the same bytes to the same state, so the weights a
// member reports by Hash() agree on every member after every global step.
#ifndef TRAINER_COLLAB_SYNCHRONIZER_H_
#define TRAINER_COLLAB_SYNCHRONIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/collab/outer_optimizer.h"
#include "trainer/collab/peer_links.h"
#include "trainer/collab/sync_config.h"

namespace dd::collab {

// What a peer sends to one round.
struct Contribution {
  uint64_t global_step = 0;   // the step it is for
  std::vector<float> values;  // averaged in place by the round
  double weight = 0;          // samples (0: take part without values)
  int64_t samples = 0;
  bool local_finite = true;   // false: the peer's own values were not finite
  std::vector<std::string> keys;  // the samples in it (audits)
  double loss = 0;                // outer steps: mean loss of its local steps
  // Where the round writes what the codec dropped (the synchronizer's
  // error-feedback residuals), or nulls.
  averaging::CodecErrors codec_errors;
  // Outer steps: the local weights when it was taken (s_k); Δ is computed
  // from them on the round's thread, and with overlap the progress made
  // during the round is carried over.
  std::vector<float> local_at_contribution;
  bool poison_for_test = false;  // fault tests: a NaN joins the values
  // Outer steps, prepared on the round's thread once the average is in:
  // the next θ and outer momentum, and (with overlap) the correction
  // θ_{k+1} − s_k that Apply adds to the local weights.
  std::vector<float> next_global, next_momentum, correction;
};

class Synchronizer {
 public:
  virtual ~Synchronizer() = default;
  virtual SyncMode mode() const = 0;
  // True when training goes on while this peer's round runs (outer steps
  // with overlap); false: the session waits for the round.
  virtual bool Overlaps() const = 0;

  // After the model accumulated a batch of `samples`. Returns the local
  // optimizer step it completed, if any (outer steps).
  virtual absl::StatusOr<std::optional<training::StepReport>> AfterBatch(int64_t samples) = 0;
  // True between local optimizer steps (no partial accumulation): a
  // contribution is taken only there.
  virtual bool AtBoundary() const = 0;
  // Samples trained toward the next contribution.
  virtual int64_t samples() const = 0;
  // Whether the peer may train another batch before its round opens
  // (`cap`: the gradient mode's max_local_samples_per_step, 0 = none).
  virtual bool MayTrain(int64_t cap) const = 0;
  // Takes the contribution for `global_step` and starts the next one's
  // accounting. `nan_for_test` poisons it (fault tests). Only what must
  // happen between local steps happens here (reading the model).
  virtual absl::StatusOr<Contribution> Contribute(uint64_t global_step, bool nan_for_test) = 0;
  // On the round's thread, before the all-reduce: the model-sized work that
  // need not hold up the local steps (outer steps: Δ, error feedback,
  // finiteness). Sets values, weight and local_finite. Never touches the
  // model; reads the synchronizer's shared state, which only Apply, Drop
  // and Restore change, and never while a round runs.
  virtual absl::Status Prepare(Contribution& contribution) = 0;
  // On the round's thread, after an all-reduce that averaged everything:
  // the same kind of work for the update (outer steps: the next θ and the
  // correction of the local weights).
  virtual absl::Status Conclude(Contribution& contribution) = 0;
  // Applies a round's average (prepared by Conclude) between local steps.
  // Returns the report of the global step. May take the contribution's
  // vectors (their storage is reused); its other fields stay.
  virtual absl::StatusOr<training::StepReport> Apply(Contribution& contribution) = 0;
  // Forgets what was trained toward the next contribution and the error
  // feedback (the peer missed a round and resynchronises). Only while no
  // round of this peer runs: a round writes into the residual.
  virtual void Drop() = 0;
  // Hex SHA-256 of the weights every member shares.
  virtual std::string Hash() const = 0;
  // The state beyond the model's that a late joiner needs, and restoring it
  // from a downloaded state (the model's part already imported).
  virtual LocalModel::StateExtras Extras() const = 0;
  virtual absl::Status Restore(const LocalModel::StateExtras& extras) = 0;
  // The weights to write to a checkpoint or sample with (θ for outer steps)
  // are put into the model by Begin and taken out again by End.
  virtual absl::Status BeginOutput() = 0;
  virtual absl::Status EndOutput() = 0;
};

// `model` must outlive the synchronizer.
std::unique_ptr<Synchronizer> MakeGradientSync(LocalModel* model);
// Reads θ from `model` (every peer's identical starting weights).
absl::StatusOr<std::unique_ptr<Synchronizer>> MakeOuterSync(LocalModel* model,
                                                            const OuterOptions& options,
                                                            int gradient_accumulation_steps);

// Hex SHA-256 of a float vector's bytes.
std::string HashOfValues(const std::vector<float>& values);

}  // namespace dd::collab

#endif  // TRAINER_COLLAB_SYNCHRONIZER_H_
