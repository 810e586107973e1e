// UNet2DConditionModel (diffusers) built from a `unet/` folder: config.json
// + diffusion_pytorch_model.safetensors. Covers what SD 1.x/2.x use:
// CrossAttnDownBlock2D, DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D,
// CrossAttnUpBlock2D; block_out_channels, layers_per_block, norm groups and
// eps, cross_attention_dim, attention_head_dim / num_attention_heads with
// diffusers' semantics (ints or per-block lists; in SD1-style configs
// attention_head_dim is the number of heads), use_linear_projection,
// transformer_layers_per_block (int or per block), the sinusoidal timestep
// embedding (flip_sin_to_cos, freq_shift), and SDXL's "text_time" added
// conditioning (pooled text embeddings + six time ids). Any other setting is
// refused by name.
#ifndef TRAINER_MODEL_UNET_H_
#define TRAINER_MODEL_UNET_H_

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/model/lora_slot.h"
#include "trainer/model/torch_tensors.h"

namespace dd::model {

struct UNetConfig {
  int64_t in_channels = 4;
  int64_t out_channels = 4;
  std::vector<int64_t> block_out_channels = {320, 640, 1280, 1280};
  std::vector<std::string> down_block_types;
  std::vector<std::string> up_block_types;
  int64_t layers_per_block = 2;
  int64_t norm_num_groups = 32;
  double norm_eps = 1e-5;
  int64_t cross_attention_dim = 768;
  std::vector<int64_t> heads;                  // per down block (resolved)
  std::vector<int64_t> transformer_layers;     // per down block
  bool use_linear_projection = false;
  bool flip_sin_to_cos = true;
  double freq_shift = 0;
  bool center_input_sample = false;
  int64_t downsample_padding = 1;
  int64_t sample_size = 64;  // latent side the model was trained at
  // SDXL: addition_embed_type "text_time".
  bool text_time = false;
  int64_t addition_time_embed_dim = 256;
  int64_t projection_class_embeddings_input_dim = 0;
};

// InvalidArgument naming the key for any unsupported or malformed value.
absl::StatusOr<UNetConfig> ParseUNetConfig(const std::string& json, const std::string& source);

// The sinusoidal timestep embedding of diffusers (get_timestep_embedding).
at::Tensor TimestepEmbedding(const at::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos,
                             double freq_shift);

class UNet {
 public:
  // NotFound for missing files; InvalidArgument naming the tensor for a
  // missing tensor or a shape that disagrees with the config.
  static absl::StatusOr<std::unique_ptr<UNet>> Load(const std::string& dir);
  ~UNet();

  const UNetConfig& config() const { return config_; }

  // sample [B, in_channels, H, W] float (H, W divisible by 2^(blocks-1)),
  // timesteps [B] or scalar, encoder_hidden_states [B, T, cross_attention_dim];
  // for text_time UNets also added_text_embeds [B, P] and added_time_ids
  // [B, 6] (InvalidArgument when missing or of the wrong size).
  // Returns the predicted noise (or v) [B, out_channels, H, W].
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& sample, const at::Tensor& timesteps,
                                     const at::Tensor& encoder_hidden_states,
                                     const at::Tensor& added_text_embeds = at::Tensor(),
                                     const at::Tensor& added_time_ids = at::Tensor()) const;

  // Every parameter by diffusers name: the float32 tensors the forward pass
  // uses (for training), with the dtype each had in the file.
  using Parameter = ModelParameter;
  const std::vector<Parameter>& parameters() const;

  // Every Linear layer's LoRA slot by diffusers name (trainer/model/lora.h
  // attaches, loads, saves and merges adapters through them).
  LoraSlots& lora_slots();
  const LoraSlots& lora_slots() const;

  // Gradient checkpointing: while autograd records, each resnet+attention
  // layer keeps only its inputs and is recomputed in backward (less
  // activation memory, one more forward pass). Same gradients.
  void SetGradientCheckpointing(bool enabled);

  // A UNet of `config` with random weights (benchmarks).
  static absl::StatusOr<std::unique_ptr<UNet>> Random(const UNetConfig& config, uint64_t seed);

  // Writes a diffusers folder: `dir`/config.json (the loaded config file,
  // unchanged) and diffusion_pytorch_model.safetensors with every parameter
  // under its diffusers name, in the dtype it was loaded with.
  absl::Status Save(const std::string& dir) const;

  struct Impl;

 private:
  UNet();
  static absl::StatusOr<std::unique_ptr<UNet>> Build(const UNetConfig& config, void* table);
  UNetConfig config_;
  std::string config_json_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dd::model

#endif  // TRAINER_MODEL_UNET_H_
