// Txt2ImgPipeline: the sampling path of diffusers' StableDiffusionPipeline
// (and StableDiffusionXLPipeline): prompt and negative prompt -> tokenizer ->
// text encoder -> classifier-free guidance around the UNet -> DDIM or Euler
// sampler -> VAE decode -> RGB in [0, 1]. The trainer uses it for the sample
// grids it logs; //trainer:sample is its command line.
#ifndef TRAINER_PIPELINE_TXT2IMG_H_
#define TRAINER_PIPELINE_TXT2IMG_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "common/image/image_codec.h"
#include "trainer/model/diffusers_model.h"

namespace dd::pipeline {

struct Txt2ImgOptions {
  std::string prompt;
  std::string negative_prompt;
  int steps = 30;
  double guidance = 7.5;  // <= 1: no classifier-free guidance (one UNet pass per step)
  uint64_t seed = 0;
  int width = 0;   // 0: the UNet's sample_size x the VAE's scale
  int height = 0;
  std::string sampler;  // "ddim", "euler"; empty: the model folder's scheduler
  // Initial latents [1, C, h, w] instead of noise drawn from `seed` (parity
  // with a reference run).
  at::Tensor initial_latents;
  // Called after each denoising step with (step, steps).
  std::function<void(int, int)> on_step;
};

class Txt2ImgPipeline {
 public:
  // `model` must outlive the pipeline and have a tokenizer, text encoder,
  // UNet and VAE (FailedPrecondition naming the missing part).
  static absl::StatusOr<Txt2ImgPipeline> Create(const model::DiffusersModel* model);

  // One image, float32 [H, W, 3] in [0, 1]. InvalidArgument for sizes that
  // are not multiples of the latent grid, steps < 1, or latents of the wrong
  // shape.
  absl::StatusOr<at::Tensor> Generate(const Txt2ImgOptions& options) const;

  // The prompt's conditioning: encoder hidden states [1, 77, D] (and, for
  // SDXL, the pooled text embeddings [1, P]).
  struct Conditioning {
    at::Tensor hidden;
    at::Tensor pooled;
  };
  absl::StatusOr<Conditioning> Encode(const std::string& prompt, bool zero_if_empty) const;

  // The latent grid's scale (8 for SD) and the default image size.
  int vae_scale() const { return vae_scale_; }
  int default_size() const;

 private:
  explicit Txt2ImgPipeline(const model::DiffusersModel* model);
  const model::DiffusersModel* model_;
  int vae_scale_ = 8;
};

// float [H, W, 3] in [0, 1] -> 8-bit RGB, rounded as diffusers' numpy_to_pil.
absl::StatusOr<RgbImage> ToRgbImage(const at::Tensor& image);

// Images of equal size tiled in a grid of `columns` (the rest in rows below).
absl::StatusOr<RgbImage> MakeGrid(const std::vector<RgbImage>& images, int columns);

}  // namespace dd::pipeline

#endif  // TRAINER_PIPELINE_TXT2IMG_H_
