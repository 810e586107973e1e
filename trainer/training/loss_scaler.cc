#include "trainer/training/loss_scaler.h"

namespace dd::training {

bool LossScaler::Unscale(std::vector<at::Tensor>& grads) const {
  at::NoGradGuard no_grad;
  bool finite = true;
  const double inv = 1.0 / scale_;
  for (at::Tensor& g : grads) {
    if (!g.defined()) continue;
    g.mul_(inv);
    if (finite && !at::isfinite(g).all().item<bool>()) finite = false;
  }
  return finite;
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
