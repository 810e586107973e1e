// CLIPTextModel (the text encoder of SD 1.x/2.x and SDXL's first encoder),
// built from a diffusers/transformers `text_encoder/` folder: config.json and
// model.safetensors (tensor names with or without the "text_model." prefix).
// Forward pass with ATen ops only: token + position embeddings, pre-norm
// transformer layers with causal self-attention, quick_gelu or gelu MLP,
// final layer norm; every hidden state is returned for clip-skip.
#ifndef TRAINER_MODEL_CLIP_TEXT_MODEL_H_
#define TRAINER_MODEL_CLIP_TEXT_MODEL_H_

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/model/lora_slot.h"
#include "trainer/model/torch_tensors.h"

namespace dd::model {

struct ClipTextConfig {
  int64_t vocab_size = 49408;
  int64_t hidden_size = 768;
  int64_t intermediate_size = 3072;
  int64_t num_attention_heads = 12;
  int64_t num_hidden_layers = 12;
  int64_t max_position_embeddings = 77;
  double layer_norm_eps = 1e-5;
  std::string hidden_act = "quick_gelu";  // or "gelu"
  int64_t eos_token_id = 2;
  // CLIPTextModelWithProjection (SDXL's second encoder): pooled output
  // projected by text_projection (no bias) to projection_dim.
  bool with_projection = false;
  int64_t projection_dim = 0;
};

// InvalidArgument naming the key for a value this implementation does not
// support (e.g. an unknown hidden_act) or a missing/ill-typed one.
absl::StatusOr<ClipTextConfig> ParseClipTextConfig(const std::string& json,
                                                   const std::string& source);

struct ClipTextOutput {
  at::Tensor last_hidden_state;           // [B, T, H], final layer norm applied
  std::vector<at::Tensor> hidden_states;  // L+1 entries: embeddings, each layer (pre final norm)
  at::Tensor pooled;                      // [B, H] at the first EOS token
  at::Tensor text_embeds;                 // [B, projection_dim] (with projection only)
  // final_layer_norm(hidden_states[L + 1 - skip]): skip 1 = last, 2 = clip-skip 2.
  at::Tensor Normed(int skip) const;
  at::Tensor final_norm_weight, final_norm_bias;
  double eps = 1e-5;
};

class ClipTextModel {
 public:
  // Loads `dir`/config.json and `dir`/model.safetensors. NotFound for a
  // missing file; InvalidArgument naming the tensor for a missing tensor or
  // a shape that disagrees with the config.
  static absl::StatusOr<std::unique_ptr<ClipTextModel>> Load(const std::string& dir);

  const ClipTextConfig& config() const { return config_; }

  // input_ids: int64 [B, T] with T <= max_position_embeddings and ids below
  // vocab_size (InvalidArgument otherwise).
  absl::StatusOr<ClipTextOutput> Forward(const at::Tensor& input_ids) const;

  // Every weight under its name in the file (with or without the
  // "text_model." prefix, as loaded): the float32 tensors Forward uses, so
  // setting requires_grad on them trains the encoder (--train_text_encoder),
  // with the dtype each had in the file.
  using Parameter = ModelParameter;
  const std::vector<Parameter>& parameters() const { return parameters_; }

  // The LoRA slots of the attention and MLP projections, by transformers'
  // module name ("text_model.encoder.layers.0.self_attn.q_proj").
  LoraSlots& lora_slots() { return lora_slots_; }
  const LoraSlots& lora_slots() const { return lora_slots_; }

  // Writes `dir`/config.json (the loaded file, unchanged) and
  // model.safetensors with every parameter in its file dtype.
  absl::Status Save(const std::string& dir) const;

 private:
  struct Layer {
    at::Tensor ln1_w, ln1_b, ln2_w, ln2_b;
    at::Tensor q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b;
    at::Tensor fc1_w, fc1_b, fc2_w, fc2_b;
    std::shared_ptr<LoraSlot> q_lora, k_lora, v_lora, o_lora, fc1_lora, fc2_lora;
  };
  ClipTextConfig config_;
  at::Tensor token_embedding_, position_embedding_;
  std::vector<Layer> layers_;
  at::Tensor final_w_, final_b_;
  at::Tensor projection_;  // [projection_dim, hidden] when with_projection
  std::vector<Parameter> parameters_;  // the tensors above, by file name
  LoraSlots lora_slots_;
  std::string config_json_;
};

}  // namespace dd::model

#endif  // TRAINER_MODEL_CLIP_TEXT_MODEL_H_
