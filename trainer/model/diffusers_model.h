// A Stable Diffusion folder in diffusers layout (what `huggingface-cli
// download` gives): model_index.json names the parts; each part is a folder
// with its config and weights (single or sharded safetensors).
#ifndef TRAINER_MODEL_DIFFUSERS_MODEL_H_
#define TRAINER_MODEL_DIFFUSERS_MODEL_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "trainer/model/clip_text_model.h"
#include "trainer/model/clip_tokenizer.h"
#include "trainer/model/unet.h"
#include "trainer/model/vae.h"

namespace dd::model {

struct DiffusersModel {
  std::unique_ptr<ClipTokenizer> tokenizer;
  std::unique_ptr<ClipTextModel> text_encoder;
  // SDXL: the second tokenizer and CLIPTextModelWithProjection.
  std::unique_ptr<ClipTokenizer> tokenizer_2;
  std::unique_ptr<ClipTextModel> text_encoder_2;
  std::unique_ptr<UNet> unet;
  std::unique_ptr<AutoencoderKL> vae;
  std::string scheduler_config_json;  // scheduler/scheduler_config.json
  std::string pipeline_class;         // model_index.json "_class_name"

  // Loads `dir`. NotFound naming model_index.json or a listed part that is
  // missing; InvalidArgument naming a part whose class is not supported
  // or a malformed index. Parts
  // set to null in the index (safety_checker, feature_extractor) are ignored.
  static absl::StatusOr<std::unique_ptr<DiffusersModel>> Load(const std::string& dir);
};

}  // namespace dd::model

#endif  // TRAINER_MODEL_DIFFUSERS_MODEL_H_
