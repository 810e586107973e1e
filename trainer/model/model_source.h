// Where a model comes from, as users name it: a diffusers folder, a Hugging
// Face Hub name (hub_download.h), or a single .safetensors file in the
// original layout (single_file.h), imported once into a cache folder with
// the configs, tokenizers and scheduler of `config` (a folder or Hub name of
// the same family: the base model it was fine-tuned from).
#ifndef TRAINER_MODEL_MODEL_SOURCE_H_
#define TRAINER_MODEL_MODEL_SOURCE_H_

#include <string>

#include "absl/status/statusor.h"

namespace dd::model {

struct ModelSource {
  std::string model;          // folder, org/name[@revision], or file.safetensors
  std::string config;         // for a single file: folder or org/name[@revision]
  std::string hf_token_file;  // Hub downloads (default: HF_TOKEN, the login file)
  std::string hf_variant;     // Hub downloads: e.g. fp16
};

// The diffusers folder `source` names. A single file is imported into
// ${XDG_CACHE_HOME:-~/.cache}/distributed-diffusion/single-file/<name>-<size>-<mtime>
// the first time (later calls reuse it). InvalidArgument for a single file
// without `config`; the errors of the download or the import.
absl::StatusOr<std::string> ResolveModel(const ModelSource& source);

}  // namespace dd::model

#endif  // TRAINER_MODEL_MODEL_SOURCE_H_
