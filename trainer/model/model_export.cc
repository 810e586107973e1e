#include "trainer/model/model_export.h"

#include <filesystem>
#include <functional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "trainer/model/clip_text_model.h"
#include "trainer/model/lora.h"
#include "trainer/model/torch_tensors.h"
#include "trainer/model/unet.h"

namespace dd::model {
namespace {

namespace fs = std::filesystem;

absl::Status RewriteTensors(const fs::path& from, const fs::path& to, at::ScalarType dtype) {
  std::map<std::string, std::string> metadata;
  ASSIGN_OR_RETURN(auto tensors, LoadTensors(from.string(), &metadata));
  try {
    for (auto& [name, t] : tensors) {
      if (at::isFloatingType(t.scalar_type())) t = t.to(dtype);
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(from.string(), ": ", e.what_without_backtrace()));
  }
  return SaveTensors(to.string(), tensors, metadata);
}

}  // namespace

absl::Status ExportModel(const std::string& from, const std::string& to, const ExportOptions& o) {
  ASSIGN_OR_RETURN(const at::ScalarType dtype, StorageDtype(o.dtype));
  std::error_code ec;
  if (!fs::is_directory(from, ec)) return absl::NotFoundError(absl::StrCat(from, " is not a folder"));
  if (fs::exists(to, ec)) return absl::AlreadyExistsError(absl::StrCat(to, " exists"));
  if (o.use_ema && !fs::is_directory(fs::path(from) / "unet_ema", ec)) {
    return absl::InvalidArgumentError(absl::StrCat(from, " has no unet_ema/"));
  }
  const fs::path tmp = to + ".tmp";
  fs::remove_all(tmp, ec);
  for (auto it = fs::recursive_directory_iterator(from, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    fs::path rel = fs::relative(it->path(), from, ec);
    const std::string top = rel.begin()->string();
    if (top == "training_state.safetensors" || top == (o.use_ema ? "unet" : "unet_ema")) continue;
    if (!o.lora.empty() && (top == "unet" || top == "unet_ema" || top == kLoraFile || top == kKohyaLoraFile)) {
      continue;
    }
    if (o.use_ema && top == "unet_ema") rel = fs::path("unet") / fs::relative(it->path(), fs::path(from) / "unet_ema");
    const fs::path dest = tmp / rel;
    if (it->is_directory()) {
      fs::create_directories(dest, ec);
    } else if (absl::EndsWith(rel.string(), ".safetensors")) {
      fs::create_directories(dest.parent_path(), ec);
      RETURN_IF_ERROR(RewriteTensors(it->path(), dest, dtype));
    } else {
      fs::create_directories(dest.parent_path(), ec);
      fs::copy_file(it->path(), dest, ec);
    }
    if (ec) return absl::InternalError(absl::StrCat("exporting ", it->path().string(), ": ", ec.message()));
  }
  if (ec) return absl::InternalError(absl::StrCat("listing ", from, ": ", ec.message()));
  if (!o.lora.empty()) {
    // base + scale · up · down, written as the folder's UNet (and text
    // encoders, when the LoRA adapts them).
    ASSIGN_OR_RETURN(auto unet, UNet::Load((fs::path(from) / (o.use_ema ? "unet_ema" : "unet")).string()));
    std::unique_ptr<ClipTextModel> encoders[2];
    const char* encoder_dirs[2] = {"text_encoder", "text_encoder_2"};
    for (int i = 0; i < 2; ++i) {
      if (fs::exists(fs::path(from) / encoder_dirs[i] / "config.json", ec)) {
        ASSIGN_OR_RETURN(encoders[i], ClipTextModel::Load((fs::path(from) / encoder_dirs[i]).string()));
      }
    }
    RETURN_IF_ERROR(
        LoadLora(o.lora, LoraModules(unet.get(), encoders[0].get(), encoders[1].get()), o.lora_scale).status());
    // Writes a merged part to tmp/`part` in `dtype` (the part's folder was
    // copied as it was; its weights file is replaced).
    auto write = [&](const std::string& part, const std::string& weights,
                     const std::function<absl::Status(const std::string&)>& save) -> absl::Status {
      const fs::path merged = tmp / (part + "_merged");
      RETURN_IF_ERROR(save(merged.string()));
      fs::create_directories(tmp / part, ec);
      fs::copy_file(merged / "config.json", tmp / part / "config.json", fs::copy_options::overwrite_existing, ec);
      if (ec) return absl::InternalError(absl::StrCat("writing the merged ", part, ": ", ec.message()));
      RETURN_IF_ERROR(RewriteTensors(merged / weights, tmp / part / weights, dtype));
      fs::remove_all(merged, ec);
      return absl::OkStatus();
    };
    MergeLora(unet->lora_slots());
    RETURN_IF_ERROR(write("unet", "diffusion_pytorch_model.safetensors",
                          [&](const std::string& d) { return unet->Save(d); }));
    for (int i = 0; i < 2; ++i) {
      if (encoders[i] == nullptr) continue;
      bool adapted = false;
      for (const auto& [name, slot] : encoders[i]->lora_slots()) adapted |= slot->down.defined();
      if (!adapted) continue;
      MergeLora(encoders[i]->lora_slots());
      fs::remove_all(tmp / encoder_dirs[i], ec);
      RETURN_IF_ERROR(write(encoder_dirs[i], "model.safetensors",
                            [&](const std::string& d) { return encoders[i]->Save(d); }));
    }
  }
  fs::rename(tmp, to, ec);
  if (ec) return absl::InternalError(absl::StrCat("renaming ", tmp.string(), ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace dd::model
