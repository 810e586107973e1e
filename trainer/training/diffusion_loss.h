// The denoising loss of diffusers' train_text_to_image: noise the latents at
// the given timesteps, predict with the UNet, MSE against epsilon or v
// (as the schedule's prediction_type says), optionally weighted per sample by
// min-SNR-gamma (Hang et al. 2023).
#ifndef TRAINER_TRAINING_DIFFUSION_LOSS_H_
#define TRAINER_TRAINING_DIFFUSION_LOSS_H_

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "trainer/diffusion/schedulers.h"
#include "trainer/model/unet.h"

namespace dd::training {

struct LossInputs {
  at::Tensor latents;                // [B, C, h, w], already x scaling_factor
  at::Tensor noise;                  // same shape
  at::Tensor timesteps;              // int64 [B]
  at::Tensor encoder_hidden_states;  // [B, T, D]
  at::Tensor added_text_embeds;      // SDXL only
  at::Tensor added_time_ids;         // SDXL only
};

struct LossOptions {
  double min_snr_gamma = 0;  // 0: plain MSE
};

// Scalar float32 loss with its autograd graph (parameters that require grad
// get gradients from backward()). InvalidArgument for mismatched shapes or
// timesteps outside the schedule.
absl::StatusOr<at::Tensor> DiffusionLoss(const model::UNet& unet,
                                         const diffusion::NoiseSchedule& schedule,
                                         const LossInputs& in, const LossOptions& options = {});

// Per-sample min-SNR weights for `timesteps`: min(snr, gamma) / snr for
// epsilon targets, min(snr, gamma) / (snr + 1) for v targets.
at::Tensor MinSnrWeights(const diffusion::NoiseSchedule& schedule, const at::Tensor& timesteps,
                         double gamma);

}  // namespace dd::training

#endif  // TRAINER_TRAINING_DIFFUSION_LOSS_H_
