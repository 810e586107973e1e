// OuterOptimizer: the outer step of DiLoCo-class training. Every peer holds
// the same global weights θ and the same outer momentum; after its local
// steps a peer contributes the pseudo-gradient Δ = θ − θ_local, the members
// average it, and every member applies the same Nesterov-SGD step to θ with
// the same averaged Δ̄, so θ stays bit-identical on every member (the same
// float operations in the same order on the same inputs; the library is
// compiled with -ffp-contract=off so no build fuses them differently).
//
// ErrorFeedback keeps, per peer, what the averaging codec dropped from its
// contribution, and adds it to the next one (as 1-bit Adam, DeMo and
// SparseLoCo do), so compression error does not accumulate as bias; and,
// for the span this peer reduces, what the codec dropped of the means it
// sent (server-side compensation as in DoubleSqueeze), which the reducer
// adds to the next means of the same positions.
//
// Pure C++ on float vectors: no gRPC or libtorch types.
#ifndef TRAINER_COLLAB_OUTER_OPTIMIZER_H_
#define TRAINER_COLLAB_OUTER_OPTIMIZER_H_

#include <cstddef>
#include <vector>

#include "absl/status/status.h"
#include "trainer/collab/sync_config.h"

namespace dd::collab {

class OuterOptimizer {
 public:
  // `global` is θ at the start of the run (every peer's identical weights).
  OuterOptimizer(std::vector<float> global, const OuterOptions& options);

  size_t size() const { return global_.size(); }
  const std::vector<float>& global() const { return global_; }
  const std::vector<float>& momentum() const { return momentum_; }

  // delta[i] = θ[i] − local[i], for size() values.
  void PseudoGradient(const float* local, float* delta) const;

  // One outer step with the members' averaged pseudo-gradient:
  //   m = μ·m + Δ̄;  θ −= lr·(Δ̄ + μ·m)  (Nesterov)  or  θ −= lr·m.
  // InvalidArgument (and nothing changes) when a value of `mean_delta` is
  // not finite.
  absl::Status Step(const float* mean_delta);

  // The same step computed into `global` and `momentum` (resized; their
  // storage is reused), leaving this optimizer as it is: the next state is
  // prepared beside the local steps, and Adopt makes it current in O(1).
  // The result is bit-identical to Step's.
  absl::Status StepInto(const float* mean_delta, std::vector<float>* global,
                        std::vector<float>* momentum) const;
  // Swaps in a state StepInto computed; the previous one is left in the
  // arguments (for reuse). InvalidArgument for other sizes.
  absl::Status Adopt(std::vector<float>* global, std::vector<float>* momentum);

  // Replaces θ and the momentum (a peer that downloaded the collaboration's
  // state). InvalidArgument when the sizes differ from size() or a value is
  // not finite; nothing changes then.
  absl::Status Restore(std::vector<float> global, std::vector<float> momentum);

 private:
  // The step from this state into the given arrays (which may be this
  // state's own: each element is read before it is written).
  absl::Status StepTo(const float* mean_delta, float* global_out, float* momentum_out) const;

  const OuterOptions options_;
  std::vector<float> global_;
  std::vector<float> momentum_;
};

class ErrorFeedback {
 public:
  explicit ErrorFeedback(size_t n) : residual_(n, 0.0f), mean_residual_(n, 0.0f) {}

  // delta += residual (call before sending).
  void AddTo(float* delta) const;
  // The residuals' storage, written by the averaging round
  // (averaging::CodecErrors): what the codec dropped of the values this
  // peer sent (so no copy of them is kept), and of the means its reducer
  // sent.
  float* data() { return residual_.data(); }
  float* mean_data() { return mean_residual_.data(); }
  void Reset();
  const std::vector<float>& residual() const { return residual_; }
  const std::vector<float>& mean_residual() const { return mean_residual_; }

 private:
  std::vector<float> residual_;
  std::vector<float> mean_residual_;
};

}  // namespace dd::collab

#endif  // TRAINER_COLLAB_OUTER_OPTIMIZER_H_
