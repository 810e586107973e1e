#include "trainer/model/diffusers_model.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/io/file_util.h"

namespace dd::model {

absl::StatusOr<std::unique_ptr<DiffusersModel>> DiffusersModel::Load(const std::string& dir) {
  std::string index_path = dir + "/model_index.json";
  auto text = ReadFileToString(index_path);
  if (!text.ok()) return text.status();
  nlohmann::json index = nlohmann::json::parse(*text, nullptr, false);
  if (index.is_discarded() || !index.is_object()) {
    return absl::InvalidArgumentError(index_path + " is not a JSON object");
  }
  auto model = std::make_unique<DiffusersModel>();
  model->pipeline_class = index.value("_class_name", "");
  for (auto it = index.begin(); it != index.end(); ++it) {
    const std::string& part = it.key();
    if (part.empty() || part[0] == '_') continue;
    const nlohmann::json& v = *it;
    if (!v.is_array() || v.size() != 2) {
      if (v.is_boolean() || v.is_number() || v.is_string() || v.is_null()) continue;  // pipeline flags
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": entry \"", part,
                                                     "\" is not [library, class]"));
    }
    if (v[1].is_null()) continue;  // e.g. safety_checker: [null, null]
    std::string cls = v[1].is_string() ? v[1].get<std::string>() : "";
    std::string path = dir + "/" + part;
    auto fail = [&](const absl::Status& s) {
      return absl::Status(s.code(), absl::StrCat("part \"", part, "\": ", s.message()));
    };
    bool is_tokenizer = cls == "CLIPTokenizer" || cls == "CLIPTokenizerFast";
    if ((part == "tokenizer" || part == "tokenizer_2") && is_tokenizer) {
      auto t = ClipTokenizer::Load(path);
      if (!t.ok()) return fail(t.status());
      (part == "tokenizer" ? model->tokenizer : model->tokenizer_2) = std::move(*t);
    } else if ((part == "text_encoder" && cls == "CLIPTextModel") ||
               (part == "text_encoder_2" && cls == "CLIPTextModelWithProjection")) {
      auto t = ClipTextModel::Load(path);
      if (!t.ok()) return fail(t.status());
      (part == "text_encoder" ? model->text_encoder : model->text_encoder_2) = std::move(*t);
    } else if (part == "unet" && cls == "UNet2DConditionModel") {
      auto u = UNet::Load(path);
      if (!u.ok()) return fail(u.status());
      model->unet = std::move(*u);
    } else if (part == "vae" && cls == "AutoencoderKL") {
      auto a = AutoencoderKL::Load(path);
      if (!a.ok()) return fail(a.status());
      model->vae = std::move(*a);
    } else if (part == "scheduler") {
      auto s = ReadFileToString(path + "/scheduler_config.json");
      if (!s.ok()) return fail(s.status());
      model->scheduler_config_json = *s;
    } else if (part == "safety_checker" || part == "feature_extractor" ||
               part == "image_encoder") {
      continue;  // not used for training
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          index_path, ": part \"", part, "\" of class ", cls, " is not supported"));
    }
  }
  for (auto [name, present] : {std::pair<const char*, bool>{"unet", model->unet != nullptr},
                               {"vae", model->vae != nullptr},
                               {"text_encoder", model->text_encoder != nullptr},
                               {"tokenizer", model->tokenizer != nullptr}}) {
    if (!present) {
      return absl::NotFoundError(absl::StrCat(index_path, " lists no usable \"", name, "\""));
    }
  }
  return model;
}

}  // namespace dd::model
