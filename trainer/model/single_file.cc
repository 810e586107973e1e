#include "trainer/model/single_file.h"

#include <array>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include <glog/logging.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/io/file_util.h"
#include "common/status/status_macros.h"
#include "trainer/model/clip_text_model.h"
#include "trainer/model/diffusers_model.h"
#include "trainer/model/ldm_names.h"
#include "trainer/model/torch_tensors.h"
#include "trainer/model/unet.h"
#include "trainer/model/vae.h"

namespace dd::model {
namespace {

namespace fs = std::filesystem;

constexpr char kUNetPrefix[] = "model.diffusion_model.";
constexpr char kVaePrefix[] = "first_stage_model.";
constexpr char kClipPrefix[] = "cond_stage_model.transformer.";     // SD 1.x
constexpr char kOpenClipPrefix[] = "cond_stage_model.model.";       // SD 2.x
constexpr char kSdxlClipPrefix[] = "conditioner.embedders.0.transformer.";
constexpr char kSdxlOpenClipPrefix[] = "conditioner.embedders.1.model.";

// What the layout of a folder's parts needs from their configs.
struct Layouts {
  UNetLayout unet;
  int vae_blocks = 0;
  ClipTextConfig text;
  std::optional<ClipTextConfig> text_2;  // SDXL
};

absl::StatusOr<Layouts> ReadLayouts(const std::string& dir) {
  Layouts l;
  ASSIGN_OR_RETURN(std::string unet_json, ReadFileToString(dir + "/unet/config.json"));
  ASSIGN_OR_RETURN(UNetConfig unet, ParseUNetConfig(unet_json, dir + "/unet/config.json"));
  l.unet.layers_per_block = static_cast<int>(unet.layers_per_block);
  for (const auto& t : unet.down_block_types) l.unet.down_has_attention.push_back(absl::StrContains(t, "Attn"));
  for (const auto& t : unet.up_block_types) l.unet.up_has_attention.push_back(absl::StrContains(t, "Attn"));
  ASSIGN_OR_RETURN(std::string vae_json, ReadFileToString(dir + "/vae/config.json"));
  ASSIGN_OR_RETURN(VaeConfig vae, ParseVaeConfig(vae_json, dir + "/vae/config.json"));
  l.vae_blocks = static_cast<int>(vae.block_out_channels.size());
  ASSIGN_OR_RETURN(std::string te_json, ReadFileToString(dir + "/text_encoder/config.json"));
  ASSIGN_OR_RETURN(l.text, ParseClipTextConfig(te_json, dir + "/text_encoder/config.json"));
  std::error_code ec;
  if (fs::exists(dir + "/text_encoder_2/config.json", ec)) {
    ASSIGN_OR_RETURN(std::string te2_json, ReadFileToString(dir + "/text_encoder_2/config.json"));
    ASSIGN_OR_RETURN(l.text_2, ParseClipTextConfig(te2_json, dir + "/text_encoder_2/config.json"));
  }
  return l;
}

bool IsVaeAttentionWeight(const std::string& diffusers_name) {
  if (!absl::StrContains(diffusers_name, "mid_block.attentions.0.")) return false;
  for (const char* p : {"to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight"}) {
    if (absl::EndsWith(diffusers_name, p)) return true;
  }
  return false;
}

// Keys a single file may hold beside the model that no part uses.
bool Ignorable(const std::string& key) {
  for (const char* p : {"model_ema.", "alphas_cumprod", "betas", "log_one_minus_alphas_cumprod",
                        "posterior_", "sqrt_", "logvar", "lvlb_weights"}) {
    if (absl::StartsWith(key, p)) return true;
  }
  return absl::EndsWith(key, "embeddings.position_ids") || absl::EndsWith(key, "logit_scale") ||
         absl::EndsWith(key, ".attn_mask");
}

// An OpenCLIP text encoder's tensors (names after its prefix) as
// transformers' names without "text_model." (q/k/v split apart);
// `layers` drops deeper resblocks (SD 2.x's diffusers encoder stops one
// short of OpenCLIP's 24: it uses the penultimate layer).
absl::Status OpenClipToHf(const std::map<std::string, at::Tensor>& in, int64_t layers,
                          bool with_projection, std::map<std::string, at::Tensor>* out,
                          std::vector<std::string>* ignored) {
  for (const auto& [key, t] : in) {
    auto hf = OpenClipNameToHf(key);
    if (!hf) return absl::InvalidArgumentError(absl::StrCat("OpenCLIP key ", key, " is not in the layout"));
    if (absl::StartsWith(*hf, "encoder.layers.")) {
      const int64_t layer = std::stoll(hf->substr(15, hf->find('.', 15) - 15));
      if (layer >= layers) {
        ignored->push_back(key);
        continue;
      }
    }
    if (*hf == "text_projection.weight") {
      if (!with_projection) {
        ignored->push_back(key);
        continue;
      }
      (*out)[*hf] = t.t().contiguous();  // OpenCLIP multiplies x @ P; transformers P x
      continue;
    }
    const size_t qkv = hf->find("self_attn.qkv_proj.");
    if (qkv != std::string::npos) {
      if (t.size(0) % 3 != 0) return absl::InvalidArgumentError(absl::StrCat(key, ": not three q/k/v parts"));
      std::vector<at::Tensor> parts = t.chunk(3, 0);
      const std::string head = hf->substr(0, qkv + 10), tail = hf->substr(qkv + 18);
      const char* names[] = {"q_proj", "k_proj", "v_proj"};
      for (int i = 0; i < 3; ++i) (*out)[head + names[i] + tail] = parts[i].contiguous();
      continue;
    }
    (*out)[*hf] = t;
  }
  return absl::OkStatus();
}

// The inverse: transformers' names (without "text_model.") to OpenCLIP's.
absl::Status HfToOpenClip(const std::map<std::string, at::Tensor>& in,
                          std::map<std::string, at::Tensor>* out) {
  std::map<std::string, std::array<at::Tensor, 3>> fused;
  for (const auto& [key, t] : in) {
    bool part = false;
    const char* names[] = {"q_proj", "k_proj", "v_proj"};
    for (int i = 0; i < 3; ++i) {
      const size_t at = key.find(std::string("self_attn.") + names[i] + ".");
      if (at == std::string::npos) continue;
      fused[key.substr(0, at) + "self_attn.qkv_proj." + key.substr(at + 17)][i] = t;
      part = true;
    }
    if (part) continue;
    auto oc = OpenClipNameFromHf(key);
    if (!oc) return absl::InvalidArgumentError(absl::StrCat("text encoder tensor ", key, " has no OpenCLIP name"));
    (*out)[*oc] = key == "text_projection.weight" ? t.t().contiguous() : t;
  }
  for (auto& [key, parts] : fused) {
    for (const auto& p : parts) {
      if (!p.defined()) return absl::InvalidArgumentError(absl::StrCat(key, ": q, k or v is missing"));
    }
    (*out)[*OpenClipNameFromHf(key)] = at::cat({parts[0], parts[1], parts[2]}, 0);
  }
  return absl::OkStatus();
}

std::string WithoutTextModel(const std::string& name) {
  return absl::StartsWith(name, "text_model.") ? name.substr(11) : name;
}

}  // namespace

const char* FamilyName(ModelFamily f) {
  switch (f) {
    case ModelFamily::kSd1: return "SD 1.x";
    case ModelFamily::kSd2: return "SD 2.x";
    case ModelFamily::kSdxl: return "SDXL";
    default: return "unknown";
  }
}

ModelFamily DetectFamily(const std::vector<std::string>& keys) {
  bool unet = false, clip = false, open_clip = false, sdxl = false;
  for (const std::string& k : keys) {
    unet |= absl::StartsWith(k, kUNetPrefix);
    clip |= absl::StartsWith(k, kClipPrefix);
    open_clip |= absl::StartsWith(k, kOpenClipPrefix);
    sdxl |= absl::StartsWith(k, "conditioner.embedders.") ||
            absl::StartsWith(k, "model.diffusion_model.label_emb.");
  }
  if (!unet) return ModelFamily::kUnknown;
  if (sdxl) return ModelFamily::kSdxl;
  if (open_clip) return ModelFamily::kSd2;
  if (clip) return ModelFamily::kSd1;
  return ModelFamily::kUnknown;
}

absl::StatusOr<ImportReport> ImportSingleFile(const std::string& path, const std::string& config_dir,
                                              const std::string& out_dir) {
  std::error_code ec;
  if (fs::exists(out_dir, ec)) return absl::AlreadyExistsError(absl::StrCat(out_dir, " exists"));
  if (!fs::exists(config_dir + "/model_index.json", ec)) {
    return absl::NotFoundError(absl::StrCat(config_dir, "/model_index.json: the config folder must be a "
                                            "diffusers folder of the same family"));
  }
  ASSIGN_OR_RETURN(auto tensors, LoadTensors(path));
  std::vector<std::string> keys;
  for (const auto& [k, t] : tensors) keys.push_back(k);
  ImportReport report;
  report.family = DetectFamily(keys);
  if (report.family == ModelFamily::kUnknown) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not a Stable Diffusion checkpoint in the original layout (no ", kUNetPrefix,
        " keys with a known text encoder)"));
  }
  ASSIGN_OR_RETURN(Layouts l, ReadLayouts(config_dir));
  const bool sdxl = report.family == ModelFamily::kSdxl;
  const bool open_clip = report.family == ModelFamily::kSd2;
  if (sdxl != l.text_2.has_value() || (!sdxl && open_clip != (l.text.hidden_act == "gelu"))) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is ", FamilyName(report.family), " but the text encoder of ", config_dir,
        " is not: give a config folder of the same family"));
  }
  std::map<std::string, at::Tensor> unet, vae, text, open_clip_text, text_2;
  // SDXL: the first encoder in transformers' names, the second OpenCLIP's.
  const std::string clip_prefix = sdxl ? kSdxlClipPrefix : kClipPrefix;
  const std::string open_clip_prefix = sdxl ? kSdxlOpenClipPrefix : kOpenClipPrefix;
  for (auto& [key, t] : tensors) {
    if (Ignorable(key)) {
      report.ignored.push_back(key);
    } else if (absl::StartsWith(key, kUNetPrefix)) {
      auto name = UNetNameFromLdm(l.unet, key.substr(strlen(kUNetPrefix)));
      if (!name) return absl::InvalidArgumentError(absl::StrCat(path, ": ", key, " is not in the UNet's layout"));
      unet[*name] = t;
    } else if (absl::StartsWith(key, kVaePrefix)) {
      auto name = VaeNameFromLdm(l.vae_blocks, key.substr(strlen(kVaePrefix)));
      if (!name) return absl::InvalidArgumentError(absl::StrCat(path, ": ", key, " is not in the VAE's layout"));
      vae[*name] = IsVaeAttentionWeight(*name) && t.dim() == 4 ? t.flatten(1) : t;
    } else if (absl::StartsWith(key, clip_prefix)) {
      text["text_model." + WithoutTextModel(key.substr(clip_prefix.size()))] = t;
    } else if (absl::StartsWith(key, open_clip_prefix)) {
      open_clip_text[key.substr(open_clip_prefix.size())] = t;
    } else {
      report.ignored.push_back(key);
    }
  }
  if (open_clip || sdxl) {
    const ClipTextConfig& c = sdxl ? *l.text_2 : l.text;
    std::map<std::string, at::Tensor> hf;
    RETURN_IF_ERROR(OpenClipToHf(open_clip_text, c.num_hidden_layers, c.with_projection, &hf, &report.ignored));
    for (auto& [k, t] : hf) (sdxl ? text_2 : text)[k == "text_projection.weight" ? k : "text_model." + k] = t;
  }
  const fs::path tmp = out_dir + ".tmp";
  fs::remove_all(tmp, ec);
  // What the file lacks comes from the config folder: everything but the
  // three parts' weights.
  for (auto it = fs::recursive_directory_iterator(config_dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    const fs::path rel = fs::relative(it->path(), config_dir, ec);
    const std::string top = rel.begin()->string();
    if (absl::StartsWith(top, "checkpoint-") || top == "training_state.safetensors") continue;
    const bool weights = absl::EndsWith(rel.string(), ".safetensors") || absl::EndsWith(rel.string(), ".bin") ||
                         absl::EndsWith(rel.string(), ".safetensors.index.json");
    if (weights && (top == "unet" || top == "vae" || top == "text_encoder" || top == "text_encoder_2")) continue;
    if (it->is_directory()) {
      fs::create_directories(tmp / rel, ec);
    } else {
      fs::create_directories((tmp / rel).parent_path(), ec);
      fs::copy_file(it->path(), tmp / rel, fs::copy_options::overwrite_existing, ec);
    }
  }
  if (ec) return absl::InternalError(absl::StrCat("copying ", config_dir, ": ", ec.message()));
  RETURN_IF_ERROR(SaveTensors((tmp / "unet/diffusion_pytorch_model.safetensors").string(), unet));
  RETURN_IF_ERROR(SaveTensors((tmp / "vae/diffusion_pytorch_model.safetensors").string(), vae));
  RETURN_IF_ERROR(SaveTensors((tmp / "text_encoder/model.safetensors").string(), text));
  if (sdxl) RETURN_IF_ERROR(SaveTensors((tmp / "text_encoder_2/model.safetensors").string(), text_2));
  report.tensors = static_cast<int>(unet.size() + vae.size() + text.size() + text_2.size());
  // Every tensor the configs need is there with its shape (and nothing
  // else was asked for).
  auto loaded = DiffusersModel::Load(tmp.string());
  if (!loaded.ok()) {
    fs::remove_all(tmp, ec);
    return absl::InvalidArgumentError(absl::StrCat(path, " does not fit the configs of ", config_dir,
                                                   ": ", loaded.status().message()));
  }
  fs::rename(tmp, out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("renaming ", tmp.string(), ": ", ec.message()));
  LOG(INFO) << path << ": " << FamilyName(report.family) << ", " << report.tensors << " tensors, "
            << report.ignored.size() << " ignored";
  return report;
}

absl::StatusOr<ModelFamily> ExportSingleFile(const std::string& model_dir, const std::string& path,
                                             const SingleFileExportOptions& o) {
  ASSIGN_OR_RETURN(at::ScalarType dtype, StorageDtype(o.dtype));
  ASSIGN_OR_RETURN(Layouts l, ReadLayouts(model_dir));
  const bool sdxl = l.text_2.has_value();
  bool open_clip = l.text.hidden_act == "gelu";
  if (o.text_encoder_layout == "clip") {
    open_clip = false;
  } else if (o.text_encoder_layout == "open_clip") {
    open_clip = true;
  } else if (o.text_encoder_layout != "auto") {
    return absl::InvalidArgumentError("text_encoder_layout must be auto, clip or open_clip");
  }
  std::map<std::string, at::Tensor> out;
  auto store = [&](const std::string& key, const at::Tensor& t) {
    out[key] = at::isFloatingType(t.scalar_type()) ? t.to(dtype) : t;
  };
  try {
    ASSIGN_OR_RETURN(auto unet, LoadPartTensors(model_dir + "/unet", "diffusion_pytorch_model"));
    for (const auto& [name, t] : unet) {
      auto ldm = UNetNameToLdm(l.unet, name);
      if (!ldm) return absl::InvalidArgumentError(absl::StrCat("UNet tensor ", name, " has no LDM name"));
      store(kUNetPrefix + *ldm, t);
    }
    ASSIGN_OR_RETURN(auto vae, LoadPartTensors(model_dir + "/vae", "diffusion_pytorch_model"));
    for (const auto& [name, t] : vae) {
      auto ldm = VaeNameToLdm(l.vae_blocks, name);
      if (!ldm) return absl::InvalidArgumentError(absl::StrCat("VAE tensor ", name, " has no LDM name"));
      store(kVaePrefix + *ldm, IsVaeAttentionWeight(name) ? t.reshape({t.size(0), t.size(1), 1, 1}) : t);
    }
    ASSIGN_OR_RETURN(auto text, LoadPartTensors(model_dir + "/text_encoder", "model"));
    if (sdxl) {
      // The first encoder in transformers' names, the second OpenCLIP's.
      for (const auto& [name, t] : text) {
        store(kSdxlClipPrefix + std::string("text_model.") + WithoutTextModel(name), t);
      }
      ASSIGN_OR_RETURN(auto text_2, LoadPartTensors(model_dir + "/text_encoder_2", "model"));
      std::map<std::string, at::Tensor> hf, oc;
      for (const auto& [name, t] : text_2) hf[WithoutTextModel(name)] = t;
      RETURN_IF_ERROR(HfToOpenClip(hf, &oc));
      for (const auto& [name, t] : oc) store(kSdxlOpenClipPrefix + name, t);
    } else if (open_clip) {
      std::map<std::string, at::Tensor> hf, oc;
      for (const auto& [name, t] : text) hf[WithoutTextModel(name)] = t;
      RETURN_IF_ERROR(HfToOpenClip(hf, &oc));
      for (const auto& [name, t] : oc) store(kOpenClipPrefix + name, t);
    } else {
      for (const auto& [name, t] : text) store(kClipPrefix + std::string("text_model.") + WithoutTextModel(name), t);
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("exporting ", model_dir, ": ", e.what_without_backtrace()));
  }
  RETURN_IF_ERROR(SaveTensors(path, out, {{"format", "pt"}}));
  return sdxl ? ModelFamily::kSdxl : open_clip ? ModelFamily::kSd2 : ModelFamily::kSd1;
}

}  // namespace dd::model
