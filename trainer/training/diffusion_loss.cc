#include "trainer/training/diffusion_loss.h"

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"

namespace dd::training {

at::Tensor MinSnrWeights(const diffusion::NoiseSchedule& schedule, const at::Tensor& timesteps,
                         double gamma) {
  at::Tensor a = schedule.AlphaBar(timesteps);  // on the timesteps' device
  at::Tensor snr = a / (1 - a);
  at::Tensor clipped = at::clamp_max(snr, gamma);
  if (schedule.config().prediction_type == "v_prediction") return clipped / (snr + 1);
  return clipped / snr;
}

absl::StatusOr<at::Tensor> DiffusionLoss(const model::UNet& unet,
                                         const diffusion::NoiseSchedule& schedule,
                                         const LossInputs& in, const LossOptions& options) {
  if (!in.latents.defined() || in.latents.dim() != 4 || !in.noise.defined() ||
      in.noise.sizes() != in.latents.sizes() || !in.timesteps.defined() ||
      in.timesteps.dim() != 1 || in.timesteps.size(0) != in.latents.size(0)) {
    return absl::InvalidArgumentError("loss inputs: latents [B,C,h,w], noise of the same shape and "
                                      "timesteps [B] are required");
  }
  // Checked where it costs nothing: on a GPU the check would wait for the
  // device every micro-batch, and the trainer draws the timesteps on the
  // CPU in range before moving them.
  const int64_t t_max = schedule.config().num_train_timesteps;
  if (in.timesteps.is_cpu() &&
      (in.timesteps.min().item<int64_t>() < 0 || in.timesteps.max().item<int64_t>() >= t_max)) {
    return absl::InvalidArgumentError(absl::StrCat("timesteps must be in [0, ", t_max, ")"));
  }
  at::Tensor noisy = schedule.AddNoise(in.latents, in.noise, in.timesteps);
  at::Tensor target = schedule.config().prediction_type == "v_prediction"
                          ? schedule.Velocity(in.latents, in.noise, in.timesteps)
                          : in.noise;
  ASSIGN_OR_RETURN(at::Tensor pred, unet.Forward(noisy, in.timesteps, in.encoder_hidden_states,
                                                 in.added_text_embeds, in.added_time_ids));
  if (options.min_snr_gamma <= 0) return at::mse_loss(pred.to(at::kFloat), target.to(at::kFloat));
  at::Tensor per_sample = (pred.to(at::kFloat) - target.to(at::kFloat)).pow(2).mean({1, 2, 3});
  return (per_sample * MinSnrWeights(schedule, in.timesteps, options.min_snr_gamma)).mean();
}

}  // namespace dd::training
