// LoRA: low-rank adapters on a UNet's Linear layers (Hu et al. 2021, as
// PEFT and kohya's sd-scripts apply them to Stable Diffusion): W x + b +
// (alpha / rank) · up(down(x)), with `down` [rank, in] initialised like
// PEFT's lora_A (uniform in ±1/sqrt(in)) and `up` [out, rank] at zero, so a
// fresh adapter changes nothing. Only the adapters are trained; a file
// holds only them (a few MB for SD 1.5 instead of 3.4 GB).
//
// Files in the two formats people load:
//   kohya / AUTOMATIC1111 / ComfyUI: "lora_unet_<module with _>.lora_down.weight",
//     ".lora_up.weight" and ".alpha" (a scalar);
//   diffusers / PEFT (pytorch_lora_weights.safetensors): "unet.<module>.lora_A.weight",
//     ".lora_B.weight", with rank and alpha in the metadata
//     ("lora_adapter_metadata", as diffusers writes it).
// and the text encoders ("lora_te_" / SDXL's "lora_te1_", "lora_te2_";
// "text_encoder.", "text_encoder_2."). Module names are the models' own
// parameter names (diffusers' for the UNet, transformers' for CLIP).
#ifndef TRAINER_MODEL_LORA_H_
#define TRAINER_MODEL_LORA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/model/clip_text_model.h"
#include "trainer/model/lora_slot.h"
#include "trainer/model/torch_tensors.h"
#include "trainer/model/unet.h"

namespace dd::model {

struct LoraOptions {
  int rank = 0;        // 0: no LoRA
  double alpha = 0;    // 0: alpha = rank (scale 1)
  // Groups of layers: "attention" (to_q, to_k, to_v, to_out.0: the default
  // of diffusers' and kohya's scripts), "feed_forward" (ff.net.0.proj,
  // ff.net.2), "projections" (proj_in, proj_out where they are Linear:
  // SD 2.x, SDXL); "convolutions" (the resnets' conv1, conv2,
  // conv_shortcut and the samplers' convolutions: kohya's conv adapters,
  // down [rank, in, k, k], up [out, rank, 1, 1]); "text_encoder" (the
  // encoders' q/k/v/out projections).
  std::vector<std::string> targets = {"attention"};
  uint64_t seed = 0;
};

enum class LoraFormat { kKohya, kPeft };

// Where a model folder (a LoRA run's checkpoint) keeps its adapters:
// diffusers' file name (its load_lora_weights finds it), and a kohya-format
// copy for AUTOMATIC1111 and ComfyUI.
inline constexpr char kLoraFile[] = "pytorch_lora_weights.safetensors";
inline constexpr char kKohyaLoraFile[] = "lora_kohya.safetensors";

// InvalidArgument for an unknown group, a rank outside [1, 1024] or a
// negative alpha.
absl::Status CheckLoraOptions(const LoraOptions& options);

// Whether `module` (a slot's name) is in one of `targets`' groups.
bool IsLoraTarget(const std::string& module, const std::vector<std::string>& targets);

// Attaches fresh adapters (on the device and in the dtype of each layer's
// weight) to every targeted slot and returns them as parameters named
// "<module>.lora_down.weight" / "<module>.lora_up.weight", in module order.
// InvalidArgument when no slot is targeted or options are bad.
absl::StatusOr<std::vector<ModelParameter>> AttachLora(LoraSlots& slots,
                                                       const LoraOptions& options);

// The attached adapters as parameters (names as AttachLora's), in order.
std::vector<ModelParameter> LoraParameters(const LoraSlots& slots);

// One model a LoRA file addresses: its keys' prefixes in the two formats,
// and its slots.
struct LoraModule {
  std::string kohya_prefix;  // "lora_unet_", "lora_te_", "lora_te1_", "lora_te2_"
  std::string peft_prefix;   // "unet.", "text_encoder.", "text_encoder_2."
  LoraSlots* slots;
};

// The UNet's and (when given) the text encoders' modules, under the prefixes
// kohya and diffusers use (SDXL's two encoders: lora_te1_/lora_te2_).
std::vector<LoraModule> LoraModules(UNet* unet, ClipTextModel* text_encoder = nullptr,
                                    ClipTextModel* text_encoder_2 = nullptr);

// Writes the attached adapters of `modules` to `path` in `format`, as
// float16 (or float32 with `fp16` false), with `alpha` (0: the rank).
// FailedPrecondition when no adapter is attached.
absl::Status SaveLora(const std::string& path, const std::vector<LoraModule>& modules,
                      LoraFormat format, double alpha, bool fp16 = true);

// Reads a LoRA file of either format (detected from its keys) and attaches
// its adapters with scale multiplier · alpha / rank. InvalidArgument for a
// file whose keys are neither format, a layer the modules do not have (e.g.
// text encoder keys when no encoder is given), shapes that do not fit the
// layer, or a missing half of a pair. Returns the number of adapted layers.
absl::StatusOr<int> LoadLora(const std::string& path, const std::vector<LoraModule>& modules,
                             double multiplier = 1.0);

// Adds scale · up · down into every adapted layer's weight and removes the
// adapters (the model then computes the same without them).
void MergeLora(LoraSlots& slots);

// The kohya name of a module: the prefix, then the name with dots as
// underscores ("lora_unet_down_blocks_0_...").
std::string KohyaName(const std::string& module, const std::string& prefix = "lora_unet_");

}  // namespace dd::model

#endif  // TRAINER_MODEL_LORA_H_
