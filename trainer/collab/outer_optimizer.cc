#include "trainer/collab/outer_optimizer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/thread/parallel_for.h"
#include "trainer/averaging/codec.h"

namespace dd::collab {

using averaging::AllFinite;

OuterOptimizer::OuterOptimizer(std::vector<float> global, const OuterOptions& options)
    : options_(options), global_(std::move(global)), momentum_(global_.size(), 0.0f) {}

void OuterOptimizer::PseudoGradient(const float* local, float* delta) const {
  ParallelFor(global_.size(), [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) delta[i] = global_[i] - local[i];
  });
}

absl::Status OuterOptimizer::Step(const float* mean_delta) {
  // In place: the inputs and outputs of each element are the same storage.
  return StepTo(mean_delta, global_.data(), momentum_.data());
}

absl::Status OuterOptimizer::StepInto(const float* mean_delta, std::vector<float>* global,
                                      std::vector<float>* momentum) const {
  global->resize(global_.size());
  momentum->resize(momentum_.size());
  return StepTo(mean_delta, global->data(), momentum->data());
}

absl::Status OuterOptimizer::StepTo(const float* mean_delta, float* global_out,
                                    float* momentum_out) const {
  if (!AllFinite(mean_delta, global_.size())) {
    return absl::InvalidArgumentError("the averaged pseudo-gradient is not finite");
  }
  const float mu = static_cast<float>(options_.momentum);
  const float lr = static_cast<float>(options_.lr);
  const float* const theta = global_.data();
  const float* const mom = momentum_.data();
  // Element-wise: the same operations on every element whichever thread
  // runs it, so θ does not depend on the thread count.
  ParallelFor(global_.size(), [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      const float g = mean_delta[i];
      const float m = mu * mom[i] + g;
      const float update = options_.nesterov ? g + mu * m : m;
      const float next = theta[i] - lr * update;
      momentum_out[i] = m;
      global_out[i] = next;
    }
  });
  return absl::OkStatus();
}

absl::Status OuterOptimizer::Adopt(std::vector<float>* global, std::vector<float>* momentum) {
  if (global->size() != global_.size() || momentum->size() != momentum_.size()) {
    return absl::InvalidArgumentError("outer state of another size");
  }
  global_.swap(*global);
  momentum_.swap(*momentum);
  return absl::OkStatus();
}

absl::Status OuterOptimizer::Restore(std::vector<float> global, std::vector<float> momentum) {
  if (global.size() != global_.size() || momentum.size() != global_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("outer state has ", global.size(), " / ",
                                                   momentum.size(), " values, the model ",
                                                   global_.size()));
  }
  if (!AllFinite(global.data(), global.size()) || !AllFinite(momentum.data(), momentum.size())) {
    return absl::InvalidArgumentError("outer state holds non-finite values");
  }
  global_ = std::move(global);
  momentum_ = std::move(momentum);
  return absl::OkStatus();
}

void ErrorFeedback::AddTo(float* delta) const {
  ParallelFor(residual_.size(), [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) delta[i] += residual_[i];
  });
}

void ErrorFeedback::Reset() {
  std::fill(residual_.begin(), residual_.end(), 0.0f);
  std::fill(mean_residual_.begin(), mean_residual_.end(), 0.0f);
}

}  // namespace dd::collab
