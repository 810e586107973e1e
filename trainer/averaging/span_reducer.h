// SpanReducer: the reducer side of one butterfly round for one span, as pure
// logic (no gRPC types). Every member contributes each part of the span; a
// part is reduced once every member still in the round has contributed it,
// and each waiting contributor is called back with the same outcome (the
// mean encoded once with the round's codec, so all members end identical).
//
// Failures: a member that sends nothing for `sender_timeout` while nothing
// it sent is waiting on the others (checked by ExcludeStalled; a sender
// whose parts wait for a slower member is blocked by its in-flight window,
// not stalled) or sends bad data (Exclude) stops being waited for; parts
// it already contributed keep its values, later parts are averaged over the
// rest with the weights renormalised. A part whose total weight is zero is
// not averaged (everyone keeps their own values). Finish() ends the round:
// every open part is reduced with whatever it has.
#ifndef TRAINER_AVERAGING_SPAN_REDUCER_H_
#define TRAINER_AVERAGING_SPAN_REDUCER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "trainer/averaging/codec.h"

namespace dd::averaging {

enum class Aggregation {
  kMean,
  // CenteredClip (Karimireddy et al., 2021): start at the coordinate-wise
  // median, then v += sum_i w_i * min(1, tau / |x_i - v|) * (x_i - v).
  kCenteredClip,
};

struct ReducerOptions {
  uint64_t span_length = 0;
  uint32_t part_elements = 1 << 17;
  uint32_t num_members = 1;
  CodecId codec = CodecId::kNone;
  Aggregation aggregation = Aggregation::kMean;
  double clip_tau = 1.0;
  int clip_iterations = 20;
  // hivemind's result form: each sender gets (mean - its decoded values),
  // encoded for it alone, instead of the one shared encoded mean.
  bool delta_results = false;
  // Error feedback at the reducer (the owner's; DoubleSqueeze's server-side
  // compensation): span_length floats that outlive the reducer, or null.
  // Each part's mean is encoded with this residual added, and the residual
  // receives what the codec dropped of that sum, so a sparse codec's mean
  // delivers what it leaves out in later rounds. Not with delta_results.
  float* mean_error = nullptr;
  // The member that owns this reducer, if any. It contributes its own parts
  // in step with its own sending, so it is never excluded as stalled.
  std::optional<uint32_t> local_sender;
  // Audited runs: the local sender's contribution to each part is kept
  // after the part is reduced (4 bytes per element of the span), so an
  // auditor can ask for it (LocalContribution).
  bool keep_local_inputs = false;
};

struct PartOutcome {
  bool averaged = false;
  std::string encoded;        // the mean, encoded with the round's codec
  std::vector<float> values;  // the same mean, decoded (what members apply);
                              // in delta mode the exact mean (for the owner)
  std::vector<std::string> deltas;  // delta mode: by sender, encoded
  uint32_t contributors = 0;
  std::vector<uint32_t> contributor_indexes;  // ascending
  double total_weight = 0;
};

// The aggregate of one part's rows (equal length, one per contributing
// member, in member order) with their weights: the weighted mean, or
// CenteredClip's fixed point. Members are taken in the order given, so the
// same rows give the same bits wherever they are reduced (a reducer, and an
// auditor reducing the part again).
std::vector<float> AggregateRows(const std::vector<const std::vector<float>*>& rows,
                                 const std::vector<double>& weights, Aggregation aggregation,
                                 double clip_tau, int clip_iterations);

class SpanReducer {
 public:
  using Done = std::function<void(absl::StatusOr<std::shared_ptr<const PartOutcome>>)>;

  explicit SpanReducer(ReducerOptions options, absl::Time start = absl::Now());

  const ReducerOptions& options() const { return options_; }
  uint32_t num_parts() const { return num_parts_; }
  // Element count of part `part`.
  uint32_t PartLength(uint32_t part) const;

  // Adds `sender`'s values of the part starting at `offset`; `done` is called
  // exactly once, with the outcome when the part is reduced (possibly right
  // away on this thread, or later on another contributor's thread), or with
  // an error: InvalidArgument (offset not a part start, wrong count, weight
  // not finite or negative, values not finite, a second contribution; the
  // sender is then excluded), FailedPrecondition (sender excluded, or the
  // part was already reduced without it), OutOfRange (sender index).
  void Contribute(uint32_t sender, uint64_t offset, const float* values, size_t count,
                  double weight, absl::Time now, Done done);

  // Stops waiting for `sender`; parts it already gave keep its values.
  void Exclude(uint32_t sender);

  // Excludes every sender that has parts left to give, has none waiting to
  // be reduced, and gave nothing since `now - sender_timeout` (or since the
  // start, or since its last waiting part was reduced), except the local
  // sender (ReducerOptions::local_sender). Returns how many.
  int ExcludeStalled(absl::Time now, absl::Duration sender_timeout);

  // Ends the round: every unreduced part is reduced with what it has.
  void Finish();

  // True once every part is reduced.
  bool AllReduced() const;

  // The local sender's values and weight for the part at `offset`, kept
  // after its reduction (ReducerOptions::keep_local_inputs). NotFound when
  // not kept: another option, not a part start, or not contributed.
  absl::StatusOr<std::pair<std::vector<float>, double>> LocalContribution(uint64_t offset) const;

 private:
  struct Part {
    // By sender, until the part is reduced: the aggregate is computed in
    // member order at the end, so it does not depend on arrival order.
    // Bounded by the senders' windows (parts in flight).
    std::vector<std::vector<float>> inputs;
    std::vector<float> kept_local;            // keep_local_inputs
    std::vector<double> weights;              // by sender
    std::vector<bool> given;                  // by sender
    std::vector<Done> waiting;
    double weight_sum = 0;
    uint32_t contributors = 0;
    std::shared_ptr<const PartOutcome> outcome;  // set once reduced
  };
  // Reduces `part` if nothing more is expected; returns the callbacks to run
  // (outside the lock).
  std::vector<Done> MaybeReduceLocked(uint32_t index, bool force, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::shared_ptr<const PartOutcome> Reduce(const Part& part, uint32_t index) const;
  std::vector<std::pair<Done, std::shared_ptr<const PartOutcome>>> ExcludeLocked(uint32_t sender,
                                                                             absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ReducerOptions options_;
  const uint32_t num_parts_;

  mutable absl::Mutex mu_;
  std::vector<Part> parts_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> excluded_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::Time> last_seen_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> given_count_ ABSL_GUARDED_BY(mu_);
  // Parts each sender gave that are not reduced yet (it waits on others).
  std::vector<uint32_t> pending_ ABSL_GUARDED_BY(mu_);
  uint32_t reduced_ ABSL_GUARDED_BY(mu_) = 0;
};

// Scales values[0..n) down to L2 norm `max_norm` when it is larger (a
// peer's bound on its own contribution; max_norm <= 0: no bound). Returns
// the norm before scaling.
double ClipToL2Norm(float* values, size_t n, double max_norm);

// The CenteredClip fixed point of rows `inputs` (equal length) with `weights`.
std::vector<float> CenteredClip(const std::vector<const std::vector<float>*>& inputs,
                                const std::vector<double>& weights, double tau, int iterations);

}  // namespace dd::averaging

#endif  // TRAINER_AVERAGING_SPAN_REDUCER_H_
