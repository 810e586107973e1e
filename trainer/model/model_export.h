// Exports a trained model folder for release: a checkpoint-N folder (or any
// diffusers folder) becomes a plain diffusers folder without the training
// state, optionally with the EMA weights as its UNet and every floating
// tensor stored in a smaller dtype (fp16 halves the size of what is shipped
// or shared; training loads any dtype as float32).
#ifndef TRAINER_MODEL_MODEL_EXPORT_H_
#define TRAINER_MODEL_MODEL_EXPORT_H_

#include <string>

#include "absl/status/status.h"

namespace dd::model {

struct ExportOptions {
  std::string dtype = "fp16";  // fp16, bf16 or fp32: floating tensors are stored so
  bool use_ema = false;        // unet_ema/ (when present) becomes unet/
  // A LoRA file (lora.h, either format) merged into the UNet at
  // `lora_scale`: the folder then holds base + scale · up · down as plain
  // weights, and no adapter files.
  std::string lora;
  double lora_scale = 1.0;
};

// Writes `to` (must not exist) from the diffusers folder `from`: every file
// copied except training_state.safetensors and unet_ema/ (or unet/, when
// use_ema takes unet_ema/'s place; with `lora`, unet/ is the merged UNet
// and the LoRA files are left out); *.safetensors rewritten with floating
// tensors in `dtype`, other tensors and metadata unchanged. InvalidArgument
// for an unknown dtype or use_ema without unet_ema/; AlreadyExists for an
// existing `to`; errors from reading or writing name the file. Writes into
// `to`.tmp and renames, so a failure leaves no half folder at `to`.
absl::Status ExportModel(const std::string& from, const std::string& to,
                         const ExportOptions& options);

}  // namespace dd::model

#endif  // TRAINER_MODEL_MODEL_EXPORT_H_
