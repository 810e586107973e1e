// export_model: turns a checkpoint into a diffusers folder to ship or share:
// no training state, floating tensors in --dtype, optionally the EMA UNet.
//
//   bazel run //trainer/tools:export_model -- --from=O/checkpoint-3000 --to=D --dtype=fp16
#include <gflags/gflags.h>

#include <iostream>

#include "common/init/init.h"
#include "trainer/model/model_export.h"

DEFINE_string(from, "", "Checkpoint or diffusers folder.");
DEFINE_string(to, "", "Folder to write (must not exist).");
DEFINE_string(dtype, "fp16", "fp16, bf16 or fp32.");
DEFINE_bool(use_ema, false, "Ship unet_ema/ as the UNet.");

namespace {

absl::Status Run(int, char**) {
  if (FLAGS_from.empty() || FLAGS_to.empty()) return absl::InvalidArgumentError("--from and --to are required");
  dd::model::ExportOptions o;
  o.dtype = FLAGS_dtype;
  o.use_ema = FLAGS_use_ema;
  if (absl::Status s = dd::model::ExportModel(FLAGS_from, FLAGS_to, o); !s.ok()) return s;
  std::cout << "exported " << FLAGS_from << " to " << FLAGS_to << " (" << FLAGS_dtype << ")\n";
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  return dd::RunMain("export_model --from=CHECKPOINT --to=DIR [--dtype=fp16]", argc, argv, Run);
}
