// Exponential moving average of the trained weights (diffusers' EMAModel
// with its default warm-up of the decay, (1 + n) / (10 + n) capped at
// `decay`): the averaged copy is what gets sampled and saved as the model
// when EMA is on, because it is smoother than the last step's weights.
#ifndef TRAINER_TRAINING_EMA_H_
#define TRAINER_TRAINING_EMA_H_

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "trainer/training/optimizer.h"

namespace dd::training {

class Ema {
 public:
  Ema(const std::vector<NamedTensor>& params, double decay);

  // Moves the average towards the current parameters.
  void Update(const std::vector<NamedTensor>& params);

  // The decay the next Update uses.
  double CurrentDecay() const;

  const std::vector<at::Tensor>& shadow() const { return shadow_; }
  int64_t updates() const { return updates_; }

  std::map<std::string, at::Tensor> ExportState(const std::vector<NamedTensor>& params) const;
  absl::Status ImportState(const std::vector<NamedTensor>& params,
                           const std::map<std::string, at::Tensor>& state);

 private:
  double decay_;
  std::vector<at::Tensor> shadow_;
  int64_t updates_ = 0;
};

}  // namespace dd::training

#endif  // TRAINER_TRAINING_EMA_H_
