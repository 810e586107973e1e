// single_file: converts between a single-file Stable Diffusion checkpoint
// (the original layout that model sites, AUTOMATIC1111 and ComfyUI use) and a
// diffusers folder (what the trainer and sample read).
//
//   # a downloaded .safetensors, with the base model's folder for configs,
//   # tokenizer and scheduler:
//   bazel run //trainer/tools:single_file -- --from=model.safetensors \
//       --config_dir=/models/stable-diffusion-v1-5 --to=/models/my-model
//   # a trained checkpoint as one file (fp16):
//   bazel run //trainer/tools:single_file -- --from=/run/checkpoint-1000 --to=my-model.safetensors
#include <gflags/gflags.h>

#include <filesystem>
#include <iostream>

#include "absl/strings/match.h"
#include "common/init/init.h"
#include "common/status/status_macros.h"
#include "trainer/model/single_file.h"

DEFINE_string(from, "", "A .safetensors single file (import) or a diffusers folder (export).");
DEFINE_string(to, "", "The diffusers folder to write (import) or the .safetensors file (export).");
DEFINE_string(config_dir, "", "Import: a diffusers folder of the same family (configs, tokenizer, scheduler).");
DEFINE_string(dtype, "fp16", "Export: fp16, bf16 or fp32.");
DEFINE_string(text_encoder_layout, "auto", "Export: auto, clip (SD 1.x) or open_clip (SD 2.x).");

namespace {

absl::Status Run(int, char**) {
  if (FLAGS_from.empty() || FLAGS_to.empty()) return absl::InvalidArgumentError("--from and --to are required");
  if (!std::filesystem::is_directory(FLAGS_from)) {
    if (FLAGS_config_dir.empty()) {
      return absl::InvalidArgumentError("importing a single file needs --config_dir (a diffusers folder of its family)");
    }
    ASSIGN_OR_RETURN(auto report, dd::model::ImportSingleFile(FLAGS_from, FLAGS_config_dir, FLAGS_to));
    std::cout << "imported " << FLAGS_from << " (" << dd::model::FamilyName(report.family) << ", "
              << report.tensors << " tensors, " << report.ignored.size() << " ignored) to " << FLAGS_to << "\n";
    return absl::OkStatus();
  }
  dd::model::SingleFileExportOptions o;
  o.dtype = FLAGS_dtype;
  o.text_encoder_layout = FLAGS_text_encoder_layout;
  ASSIGN_OR_RETURN(auto family, dd::model::ExportSingleFile(FLAGS_from, FLAGS_to, o));
  std::cout << "exported " << FLAGS_from << " as " << dd::model::FamilyName(family) << " single file "
            << FLAGS_to << " (" << FLAGS_dtype << ")\n";
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  return dd::RunMain("single_file --from=FILE|DIR --to=DIR|FILE [--config_dir=D]", argc, argv, Run);
}
