#include "trainer/training/gradients.h"

#include <cmath>

namespace dd::training {

double GlobalNorm(const std::vector<at::Tensor>& grads) {
  at::NoGradGuard no_grad;
  double sum = 0;
  for (const at::Tensor& g : grads) {
    if (!g.defined()) continue;
    double n = g.norm(2).item<double>();
    sum += n * n;
  }
  return std::sqrt(sum);
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
