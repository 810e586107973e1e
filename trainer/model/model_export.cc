#include "trainer/model/model_export.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
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
  at::ScalarType dtype;
  if (o.dtype == "fp16") {
    dtype = at::kHalf;
  } else if (o.dtype == "bf16") {
    dtype = at::kBFloat16;
  } else if (o.dtype == "fp32") {
    dtype = at::kFloat;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("dtype \"", o.dtype, "\": use fp16, bf16 or fp32"));
  }
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
    // base + scale · up · down, written as the folder's UNet.
    ASSIGN_OR_RETURN(auto unet, UNet::Load((fs::path(from) / (o.use_ema ? "unet_ema" : "unet")).string()));
    RETURN_IF_ERROR(LoadLora(o.lora, unet->lora_slots(), o.lora_scale).status());
    MergeLora(unet->lora_slots());
    const fs::path merged = tmp / "unet_merged";
    RETURN_IF_ERROR(unet->Save(merged.string()));
    fs::create_directories(tmp / "unet", ec);
    fs::copy_file(merged / "config.json", tmp / "unet" / "config.json", ec);
    if (ec) return absl::InternalError(absl::StrCat("writing the merged UNet: ", ec.message()));
    RETURN_IF_ERROR(RewriteTensors(merged / "diffusion_pytorch_model.safetensors",
                                   tmp / "unet" / "diffusion_pytorch_model.safetensors", dtype));
    fs::remove_all(merged, ec);
  }
  fs::rename(tmp, to, ec);
  if (ec) return absl::InternalError(absl::StrCat("renaming ", tmp.string(), ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace dd::model
