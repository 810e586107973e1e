#include "trainer/training/loss_scaler.h"

#include <ATen/core/grad_mode.h>

namespace dd::training {

bool LossScaler::Unscale(std::vector<at::Tensor>& grads) const {
  at::NoGradGuard no_grad;
  const double inv = 1.0 / scale_;
  // One verdict per tensor, kept where the gradients are; one transfer to
  // the host for all of them.
  std::vector<at::Tensor> finite;
  finite.reserve(grads.size());
  for (at::Tensor& g : grads) {
    if (!g.defined()) continue;
    g.mul_(inv);
    finite.push_back(at::isfinite(g).all());
  }
  return finite.empty() || at::stack(finite).all().item<bool>();
}

void LossScaler::Update(bool found_inf) {
  if (found_inf) {
    scale_ = std::max(scale_ * 0.5, 1.0);
    clean_steps_ = 0;
    return;
  }
  if (++clean_steps_ >= growth_interval_) {
    scale_ *= 2.0;
    clean_steps_ = 0;
  }
}

}  // namespace dd::training
