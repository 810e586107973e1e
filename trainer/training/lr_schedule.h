// Learning-rate schedules with the semantics of diffusers' get_scheduler
// (constant, constant_with_warmup, linear, cosine, polynomial): a multiplier
// of the base learning rate for each optimizer step. Pure.
#ifndef TRAINER_TRAINING_LR_SCHEDULE_H_
#define TRAINER_TRAINING_LR_SCHEDULE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace dd::training {

struct LrScheduleOptions {
  std::string name = "constant";
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;   // required by linear, cosine, polynomial
  double cosine_cycles = 0.5;
  double poly_power = 1.0;
  double poly_lr_end = 1e-7;  // absolute, as diffusers' lr_end
};

class LrSchedule {
 public:
  // InvalidArgument for an unknown name, negative steps, or a decaying
  // schedule without total_steps.
  static absl::StatusOr<LrSchedule> Make(double base_lr, const LrScheduleOptions& options);

  // The learning rate of optimizer step `step` (0-based: the first update
  // uses step 0, as torch's LambdaLR does).
  double At(int64_t step) const;

 private:
  double base_lr_ = 0;
  LrScheduleOptions o_;
};

}  // namespace dd::training

#endif  // TRAINER_TRAINING_LR_SCHEDULE_H_
