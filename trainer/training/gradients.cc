#include "trainer/training/gradients.h"

#include <ATen/core/grad_mode.h>

namespace dd::training {

double GlobalNorm(const std::vector<at::Tensor>& grads) {
  at::NoGradGuard no_grad;
  // The per-tensor norms stay where the gradients are and only the total
  // comes to the host: one synchronisation per step, not one per tensor
  // (~700 for SD's UNet, each a stall of the GPU's queue).
  std::vector<at::Tensor> norms;
  norms.reserve(grads.size());
  for (const at::Tensor& g : grads) {
    if (g.defined()) norms.push_back(g.norm(2).to(at::kDouble));
  }
  if (norms.empty()) return 0;
  return at::stack(norms).norm(2).item<double>();
}

double ClipGradNorm(std::vector<at::Tensor>& grads, double max_norm) {
  const double norm = GlobalNorm(grads);
  if (max_norm > 0 && std::isfinite(norm)) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1) {
      at::NoGradGuard no_grad;
      for (at::Tensor& g : grads) {
        if (g.defined()) g.mul_(coef);
      }
    }
  }
  return norm;
}

}  // namespace dd::training
