#include "trainer/training/ema.h"

#include <ATen/core/grad_mode.h>
#include <algorithm>

#include "absl/strings/str_cat.h"

namespace dd::training {

Ema::Ema(const std::vector<NamedTensor>& params, double decay) : decay_(decay) {
  for (const NamedTensor& p : params) shadow_.push_back(p.value.detach().clone());
}

double Ema::CurrentDecay() const {
  // diffusers: the first update copies the weights (decay 0), then
  // (1 + n) / (10 + n) for the n-th following one, capped at `decay`.
  const double n = static_cast<double>(updates_);
  if (updates_ == 0) return 0.0;
  return std::clamp(std::min(decay_, (1 + n) / (10 + n)), 0.0, 1.0);
}

void Ema::Update(const std::vector<NamedTensor>& params) {
  at::NoGradGuard no_grad;
  const double one_minus = 1 - CurrentDecay();
  for (size_t i = 0; i < shadow_.size(); ++i) {
    shadow_[i].sub_((shadow_[i] - params[i].value) * one_minus);
  }
  ++updates_;
}

std::map<std::string, at::Tensor> Ema::ExportState(const std::vector<NamedTensor>& params) const {
  std::map<std::string, at::Tensor> out;
  out["ema.updates"] = at::tensor({updates_}, at::kLong);
  for (size_t i = 0; i < shadow_.size(); ++i) out["ema." + params[i].name] = shadow_[i].clone();
  return out;
}

absl::Status Ema::ImportState(const std::vector<NamedTensor>& params,
                              const std::map<std::string, at::Tensor>& state) {
  auto u = state.find("ema.updates");
  if (u == state.end()) return absl::InvalidArgumentError("training state lacks ema.updates");
  std::vector<at::Tensor> shadow;
  for (const NamedTensor& p : params) {
    auto it = state.find("ema." + p.name);
    if (it == state.end() || it->second.sizes() != p.value.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("training state lacks ema.", p.name,
                                                     " or it has the wrong shape"));
    }
    // On the parameter's device (a GPU when training there).
    shadow.push_back(it->second.to(p.value.device(), at::kFloat, false, /*copy=*/true));
  }
  shadow_ = std::move(shadow);
  updates_ = u->second.item<int64_t>();
  return absl::OkStatus();
}

}  // namespace dd::training
