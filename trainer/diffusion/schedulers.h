// Noise schedules and samplers with diffusers' semantics, read from a model
// folder's scheduler_config.json: the DDPM training schedule (add_noise,
// velocity, zero-terminal-SNR rescale) and the DDIM (eta 0) and Euler
// discrete samplers with leading / trailing / linspace spacing.
#ifndef TRAINER_DIFFUSION_SCHEDULERS_H_
#define TRAINER_DIFFUSION_SCHEDULERS_H_

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <mutex>

#include <string>

#include "absl/status/statusor.h"

namespace dd::diffusion {

struct ScheduleConfig {
  int64_t num_train_timesteps = 1000;
  std::string beta_schedule = "scaled_linear";  // or "linear"
  double beta_start = 0.00085;
  double beta_end = 0.012;
  std::string prediction_type = "epsilon";  // or "v_prediction"
  bool rescale_betas_zero_snr = false;
  std::string timestep_spacing = "leading";  // "trailing", "linspace"
  int64_t steps_offset = 0;
  bool set_alpha_to_one = true;
};

// InvalidArgument naming any value that is not supported (other beta
// schedules, sample prediction, thresholding, clip_sample, trained_betas).
absl::StatusOr<ScheduleConfig> ParseScheduleConfig(const std::string& json,
                                                   const std::string& source);

class NoiseSchedule {
 public:
  explicit NoiseSchedule(const ScheduleConfig& config);
  const ScheduleConfig& config() const { return config_; }
  const at::Tensor& alphas_cumprod() const { return alphas_cumprod_; }  // float32 [T]

  // sqrt(a_t) x0 + sqrt(1 - a_t) noise, t int64 [B].
  at::Tensor AddNoise(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& t) const;
  // sqrt(a_t) noise - sqrt(1 - a_t) x0 (the v-prediction target).
  at::Tensor Velocity(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& t) const;
  // a_t (alphas_cumprod) for int64 timesteps t [B], on t's device.
  at::Tensor AlphaBar(const at::Tensor& t) const;

 private:
  // alphas_cumprod on `device`, uploaded once per device: gathering from
  // the CPU table would bring the timesteps to the host first, and on a GPU
  // that copy waits for every kernel queued before it.
  at::Tensor TableOn(const at::Device& device) const;

  struct DeviceTables {
    std::mutex mu;
    std::map<std::string, at::Tensor> by_device;  // guarded by mu
  };

  ScheduleConfig config_;
  at::Tensor alphas_cumprod_;
  // Shared by copies of the schedule (the tables are constant).
  std::shared_ptr<DeviceTables> device_tables_ = std::make_shared<DeviceTables>();
};

class DdimSampler {
 public:
  DdimSampler(const ScheduleConfig& config, int64_t steps);
  const at::Tensor& timesteps() const { return timesteps_; }  // int64, descending
  // One eta-0 step from `sample` at timestep `t` given the model output.
  at::Tensor Step(const at::Tensor& model_output, int64_t t, const at::Tensor& sample) const;
  double init_noise_sigma() const { return 1.0; }

 private:
  NoiseSchedule schedule_;
  int64_t steps_;
  at::Tensor timesteps_;
};

class EulerSampler {
 public:
  EulerSampler(const ScheduleConfig& config, int64_t steps);
  const at::Tensor& timesteps() const { return timesteps_; }  // float32, descending
  const at::Tensor& sigmas() const { return sigmas_; }        // steps + 1, last 0
  double init_noise_sigma() const;
  // sample / sqrt(sigma_i^2 + 1) for step index `i`.
  at::Tensor ScaleModelInput(const at::Tensor& sample, int64_t i) const;
  at::Tensor Step(const at::Tensor& model_output, int64_t i, const at::Tensor& sample) const;

 private:
  ScheduleConfig config_;
  at::Tensor timesteps_;
  at::Tensor sigmas_;
};

}  // namespace dd::diffusion

#endif  // TRAINER_DIFFUSION_SCHEDULERS_H_
