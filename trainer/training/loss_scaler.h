// Dynamic loss scaling for fp16 training (torch.cuda.amp.GradScaler's
// rules): the loss is multiplied by `scale` before backward so small fp16
// gradients do not flush to zero; gradients are divided by it before the
// optimizer step; a step whose gradients hold inf/NaN is skipped and the
// scale halved; after `growth_interval` clean steps it doubles. Pure.
#ifndef TRAINER_TRAINING_LOSS_SCALER_H_
#define TRAINER_TRAINING_LOSS_SCALER_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace dd::training {

class LossScaler {
 public:
  explicit LossScaler(double initial_scale = 65536.0, int64_t growth_interval = 2000)
      : scale_(initial_scale), growth_interval_(growth_interval) {}

  double scale() const { return scale_; }

  // Divides the gradients by the scale in place; false when any is not
  // finite (the step must be skipped).
  bool Unscale(std::vector<at::Tensor>& grads) const;

  // Adjusts the scale after a step: halves it when `found_inf`, doubles it
  // after growth_interval clean steps in a row.
  void Update(bool found_inf);

  // For checkpoints: the scale and the count of clean steps.
  void Restore(double scale, int64_t clean_steps) {
    scale_ = scale;
    clean_steps_ = clean_steps;
  }
  int64_t clean_steps() const { return clean_steps_; }

 private:
  double scale_;
  int64_t growth_interval_;
  int64_t clean_steps_ = 0;
};

}  // namespace dd::training

#endif  // TRAINER_TRAINING_LOSS_SCALER_H_
