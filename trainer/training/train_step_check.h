// The training step against a reference run of diffusers + torch
// (train_step_io in ../shared/fixtures/README.md): two AdamW steps of a
// UNet on a fixed batch. Used by the parity tool and its test.
#ifndef TRAINER_TRAINING_TRAIN_STEP_CHECK_H_
#define TRAINER_TRAINING_TRAIN_STEP_CHECK_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dd::training {

struct TrainStepComparison {
  std::vector<double> loss_rel_error;       // per step
  std::vector<double> grad_norm_rel_error;  // per step
  double worst_param_norm_rel_error = 0;    // over every parameter
  int64_t params_compared_fully = 0;        // parameters stored in full
  int64_t elements_compared = 0;
  // Elements that differ by more than 1e-4 of their parameter's scale (at
  // least 100 lr). Adam's first steps turn a float-rounding sign flip of a
  // near-zero gradient into a step of lr the other way, in PyTorch as here,
  // so such differences are expected where a gradient is near zero
  // (|g| < 1e-5 in either step) and a bug anywhere else.
  int64_t elements_differing = 0;
  int64_t elements_differing_with_clear_gradient = 0;
};

// `unet_dir`: the model's unet/ folder; `reference_dir` holds
// train_step_io.safetensors, train_step_args.json and
// train_step_param_names.json. NotFound / InvalidArgument for missing or
// malformed files.
absl::StatusOr<TrainStepComparison> CompareTrainStep(const std::string& unet_dir,
                                                     const std::string& reference_dir);

}  // namespace dd::training

#endif  // TRAINER_TRAINING_TRAIN_STEP_CHECK_H_
