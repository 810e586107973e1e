// export_model: turns a checkpoint into a diffusers folder to ship or share:
// no training state, floating tensors in --dtype, optionally the EMA UNet,
// optionally a LoRA merged into the UNet (base + scale · up · down).
//
//   bazel run //trainer/tools:export_model -- --from=O/checkpoint-3000 --to=D --dtype=fp16
//   bazel run //trainer/tools:export_model -- --from=O/checkpoint-3000 --to=D \
//       --lora=O/checkpoint-3000/pytorch_lora_weights.safetensors --lora_scale=0.8
#include <gflags/gflags.h>

#include <iostream>

#include "common/init/init.h"
#include "trainer/model/model_export.h"

DEFINE_string(from, "", "Checkpoint or diffusers folder.");
DEFINE_string(to, "", "Folder to write (must not exist).");
DEFINE_string(dtype, "fp16", "fp16, bf16 or fp32.");
DEFINE_bool(use_ema, false, "Ship unet_ema/ as the UNet.");
DEFINE_string(lora, "", "A LoRA file (kohya or diffusers/PEFT keys) to merge into the UNet.");
DEFINE_double(lora_scale, 1.0, "How strongly the merged LoRA applies.");

namespace {

absl::Status Run(int, char**) {
  if (FLAGS_from.empty() || FLAGS_to.empty()) return absl::InvalidArgumentError("--from and --to are required");
  dd::model::ExportOptions o;
  o.dtype = FLAGS_dtype;
  o.use_ema = FLAGS_use_ema;
  o.lora = FLAGS_lora;
  o.lora_scale = FLAGS_lora_scale;
  if (absl::Status s = dd::model::ExportModel(FLAGS_from, FLAGS_to, o); !s.ok()) return s;
  std::cout << "exported " << FLAGS_from << " to " << FLAGS_to << " (" << FLAGS_dtype << ")\n";
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  return dd::RunMain("export_model --from=CHECKPOINT --to=DIR [--dtype=fp16]", argc, argv, Run);
}
