// StepReport: what one optimizer step did, as every training mode reports it.
#ifndef TRAINER_TRAINING_STEP_REPORT_H_
#define TRAINER_TRAINING_STEP_REPORT_H_

#include <cstdint>

namespace dd::training {

struct StepReport {
  int64_t step = 0;      // after the update (1-based)
  double loss = 0;       // mean over the micro-batches
  double grad_norm = 0;  // before clipping
  double lr = 0;
  bool skipped = false;  // non-finite gradients: no update
  int64_t samples = 0;
  double seconds = 0;
};

}  // namespace dd::training

#endif  // TRAINER_TRAINING_STEP_REPORT_H_
