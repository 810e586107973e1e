// Single-file checkpoints: the one .safetensors file of the original
// Stable Diffusion layout (ldm_names.h) that model sites share and
// AUTOMATIC1111 and ComfyUI load, to and from a diffusers folder.
//
// Importing needs a diffusers folder of the same family for what such a file
// does not hold: the parts' configs, the tokenizers and the scheduler (as
// diffusers' from_single_file takes a `config`); e.g. the base model the
// file was fine-tuned from. The family is read from the file's keys.
// SD 1.x, 2.x and SDXL (its first encoder in transformers' names, the second
// OpenCLIP's with its projection transposed) are supported both ways.
#ifndef TRAINER_MODEL_SINGLE_FILE_H_
#define TRAINER_MODEL_SINGLE_FILE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dd::model {

enum class ModelFamily { kUnknown, kSd1, kSd2, kSdxl };
const char* FamilyName(ModelFamily family);

// The family a single file's keys name: SDXL by its conditioner or label
// embedding, SD 2.x by its OpenCLIP text encoder, SD 1.x by its CLIP one.
ModelFamily DetectFamily(const std::vector<std::string>& keys);

struct ImportReport {
  ModelFamily family = ModelFamily::kUnknown;
  int tensors = 0;                   // written to the folder
  std::vector<std::string> ignored;  // EMA copies, schedule buffers, ...
};

// Writes the diffusers folder `out_dir` (must not exist; written as
// `out_dir`.tmp and renamed) from the single file `path`, taking configs,
// tokenizers and scheduler from `config_dir`, and loads it once to check
// every tensor's name and shape. NotFound for a missing file or folder;
// InvalidArgument for an unknown family, a family unlike the config
// folder's, or a key under a model prefix that the layout does not name;
// AlreadyExists for an existing `out_dir`.
absl::StatusOr<ImportReport> ImportSingleFile(const std::string& path,
                                              const std::string& config_dir,
                                              const std::string& out_dir);

struct SingleFileExportOptions {
  std::string dtype = "fp16";  // fp16, bf16 or fp32 for floating tensors
  // The text encoder's layout: "auto" (OpenCLIP for a gelu encoder, as SD
  // 2.x has, else transformers' CLIP), "clip" or "open_clip".
  std::string text_encoder_layout = "auto";
};

// Writes the diffusers folder `model_dir` (UNet, VAE, text encoder) as the
// single file `path`. Returns the family written.
absl::StatusOr<ModelFamily> ExportSingleFile(const std::string& model_dir, const std::string& path,
                                             const SingleFileExportOptions& options = {});

}  // namespace dd::model

#endif  // TRAINER_MODEL_SINGLE_FILE_H_
