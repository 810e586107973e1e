// AutoencoderKL (diffusers) built from a `vae/` folder: image -> latent
// distribution (mean, logvar, std; sampling with a generator) and latent ->
// image. `scaling_factor` comes from the config; Encode/Decode do not apply
// it (as diffusers' vae.encode / vae.decode do not).
#ifndef TRAINER_MODEL_VAE_H_
#define TRAINER_MODEL_VAE_H_

#include <ATen/ATen.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/model/torch_tensors.h"

namespace dd::model {

struct VaeConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  int64_t latent_channels = 4;
  std::vector<int64_t> block_out_channels = {128, 256, 512, 512};
  int64_t layers_per_block = 2;
  int64_t norm_num_groups = 32;
  double scaling_factor = 0.18215;
  bool mid_block_add_attention = true;
  bool use_quant_conv = true;
  bool use_post_quant_conv = true;
};

absl::StatusOr<VaeConfig> ParseVaeConfig(const std::string& json, const std::string& source);

struct LatentDistribution {
  at::Tensor mean, logvar, std;
  // mean + std * noise, noise from `generator` (CPU) when given.
  at::Tensor Sample(std::optional<at::Generator> generator = std::nullopt) const;
};

class AutoencoderKL {
 public:
  static absl::StatusOr<std::unique_ptr<AutoencoderKL>> Load(const std::string& dir);
  ~AutoencoderKL();
  const VaeConfig& config() const { return config_; }
  double scaling_factor() const { return config_.scaling_factor; }

  // image [B, in_channels, H, W] in [-1, 1]; H, W divisible by 2^(blocks-1).
  absl::StatusOr<LatentDistribution> Encode(const at::Tensor& image) const;
  // z [B, latent_channels, h, w] -> image [B, out_channels, h*f, w*f].
  absl::StatusOr<at::Tensor> Decode(const at::Tensor& z) const;

  struct Impl;

  // The name and shape of every weight a VAE of `config` has (to write a
  // randomly initialised model folder).
  struct ParameterShape {
    std::string name;
    std::vector<int64_t> shape;
  };
  static absl::StatusOr<std::vector<ParameterShape>> ParameterShapes(const VaeConfig& config);

  // Every weight by diffusers name: the float32 tensors the passes use (for
  // training the VAE), with the dtype each had in the file.
  using Parameter = ModelParameter;
  const std::vector<Parameter>& parameters() const;

  // Writes `dir`/config.json (as loaded, with any SetScalingFactor applied)
  // and the weights in their file dtypes.
  absl::Status Save(const std::string& dir) const;

  // Replaces the config's scaling_factor (the factor that brings latents to
  // unit variance; a newly trained VAE needs its own). `factor` must be
  // finite and > 0. Fails for a VAE not loaded from a folder.
  absl::Status SetScalingFactor(double factor);

 private:
  AutoencoderKL();
  static absl::StatusOr<std::unique_ptr<AutoencoderKL>> Build(const VaeConfig& config, void* table);
  VaeConfig config_;
  std::string config_json_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dd::model

#endif  // TRAINER_MODEL_VAE_H_
