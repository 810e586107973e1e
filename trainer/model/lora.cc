#include "trainer/model/lora.h"

#include <cmath>
#include <map>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "trainer/model/torch_compat.h"

namespace dd::model {
namespace {

constexpr char kDown[] = ".lora_down.weight";
constexpr char kUp[] = ".lora_up.weight";
constexpr char kKohyaPrefix[] = "lora_unet_";
constexpr char kPeftPrefix[] = "unet.";
constexpr char kPeftA[] = ".lora_A.weight";
constexpr char kPeftB[] = ".lora_B.weight";

const std::map<std::string, std::vector<std::string>>& Groups() {
  static const auto* groups = new std::map<std::string, std::vector<std::string>>{
      {"attention", {".to_q", ".to_k", ".to_v", ".to_out.0"}},
      {"feed_forward", {".ff.net.0.proj", ".ff.net.2"}},
      {"projections", {".proj_in", ".proj_out"}},
  };
  return *groups;
}

// What a file holds for one module.
struct Pair {
  at::Tensor down, up;
  double alpha = 0;  // 0: none given
};

absl::Status Attach(LoraSlot& slot, const std::string& module, const at::Tensor& down,
                    const at::Tensor& up, double alpha, double multiplier) {
  const int64_t out = slot.weight.size(0), in = slot.weight.size(1);
  if (down.dim() != 2 || up.dim() != 2 || down.size(1) != in || up.size(0) != out ||
      up.size(1) != down.size(0) || down.size(0) < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LoRA for ", module, ": down [", absl::StrJoin(down.sizes().vec(), ","), "] and up [",
        absl::StrJoin(up.sizes().vec(), ","), "] do not fit the layer's [", out, ",", in, "]"));
  }
  const double rank = static_cast<double>(down.size(0));
  const at::TensorOptions like = slot.weight.options();
  slot.down = down.to(like).contiguous();
  slot.up = up.to(like).contiguous();
  slot.scale = multiplier * (alpha > 0 ? alpha : rank) / rank;
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckLoraOptions(const LoraOptions& o) {
  if (o.rank < 1 || o.rank > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("lora rank ", o.rank, " is not in [1, 1024]"));
  }
  if (!(o.alpha >= 0) || !std::isfinite(o.alpha)) {
    return absl::InvalidArgumentError("lora alpha must be finite and >= 0");
  }
  if (o.targets.empty()) return absl::InvalidArgumentError("no LoRA targets");
  for (const std::string& t : o.targets) {
    if (Groups().count(t) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown LoRA target \"", t, "\" (attention, feed_forward, projections; text encoder "
          "adapters are not supported yet)"));
    }
  }
  return absl::OkStatus();
}

bool IsLoraTarget(const std::string& module, const std::vector<std::string>& targets) {
  for (const std::string& t : targets) {
    auto it = Groups().find(t);
    if (it == Groups().end()) continue;
    for (const std::string& suffix : it->second) {
      if (absl::EndsWith(module, suffix)) return true;
    }
  }
  return false;
}

absl::StatusOr<std::vector<ModelParameter>> AttachLora(LoraSlots& slots, const LoraOptions& o) {
  if (absl::Status s = CheckLoraOptions(o); !s.ok()) return s;
  auto generator = at::detail::createCPUGenerator(o.seed);
  int attached = 0;
  try {
    for (auto& [module, slot] : slots) {
      if (!IsLoraTarget(module, o.targets)) continue;
      const int64_t out = slot->weight.size(0), in = slot->weight.size(1);
      const double bound = 1.0 / std::sqrt(static_cast<double>(in));
      at::Tensor down = at::empty({o.rank, in}, at::kFloat).uniform_(-bound, bound, generator);
      at::Tensor up = at::zeros({out, o.rank}, at::kFloat);
      if (absl::Status s = Attach(*slot, module, down, up, o.alpha, 1.0); !s.ok()) return s;
      ++attached;
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("attaching LoRA: ", e.what_without_backtrace()));
  }
  if (attached == 0) {
    return absl::InvalidArgumentError("no layer of the model is a LoRA target of " +
                                      absl::StrJoin(o.targets, ","));
  }
  return LoraParameters(slots);
}

std::vector<ModelParameter> LoraParameters(const LoraSlots& slots) {
  std::vector<ModelParameter> out;
  for (const auto& [module, slot] : slots) {
    if (!slot->down.defined()) continue;
    out.push_back({module + kDown, slot->down, at::kFloat});
    out.push_back({module + kUp, slot->up, at::kFloat});
  }
  return out;
}

std::string KohyaName(const std::string& module) {
  return kKohyaPrefix + absl::StrReplaceAll(module, {{".", "_"}});
}

absl::Status SaveLora(const std::string& path, const LoraSlots& slots, LoraFormat format,
                      double alpha, bool fp16) {
  std::map<std::string, at::Tensor> tensors;
  int64_t rank = 0;
  std::vector<std::string> modules;
  try {
    auto stored = [fp16](const at::Tensor& t) {
      return t.detach().to(at::kCPU, fp16 ? at::kHalf : at::kFloat).contiguous();
    };
    for (const auto& [module, slot] : slots) {
      if (!slot->down.defined()) continue;
      rank = slot->down.size(0);
      modules.push_back(module);
      if (format == LoraFormat::kKohya) {
        const std::string k = KohyaName(module);
        tensors[k + kDown] = stored(slot->down);
        tensors[k + kUp] = stored(slot->up);
        tensors[k + ".alpha"] =
            at::scalar_tensor(alpha > 0 ? alpha : double(rank), at::kFloat).to(fp16 ? at::kHalf : at::kFloat);
      } else {
        tensors[kPeftPrefix + module + kPeftA] = stored(slot->down);
        tensors[kPeftPrefix + module + kPeftB] = stored(slot->up);
      }
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("saving LoRA: ", e.what_without_backtrace()));
  }
  if (tensors.empty()) return absl::FailedPreconditionError("no LoRA adapter is attached");
  std::map<std::string, std::string> metadata;
  if (format == LoraFormat::kPeft) {
    // What diffusers' save_lora_weights records for load_lora_weights.
    std::vector<std::string> targets;
    for (const std::string& m : modules) targets.push_back(m);
    nlohmann::json unet = {{"r", rank}, {"lora_alpha", alpha > 0 ? alpha : double(rank)},
                           {"target_modules", targets}};
    metadata["lora_adapter_metadata"] = nlohmann::json{{"unet", unet}}.dump();
  } else {
    metadata["ss_network_module"] = "networks.lora";
    metadata["ss_network_dim"] = absl::StrCat(rank);
    metadata["ss_network_alpha"] = absl::StrCat(alpha > 0 ? alpha : double(rank));
  }
  metadata["format"] = "pt";
  return SaveTensors(path, tensors, metadata);
}

absl::StatusOr<int> LoadLora(const std::string& path, LoraSlots& slots, double multiplier) {
  std::map<std::string, std::string> metadata;
  auto tensors = LoadTensors(path, &metadata);
  if (!tensors.ok()) return tensors.status();
  // Kohya names flatten dots: map them back through the model's modules.
  std::map<std::string, std::string> by_kohya;
  for (const auto& [module, slot] : slots) by_kohya[KohyaName(module)] = module;
  double peft_alpha = 0;
  if (auto it = metadata.find("lora_adapter_metadata"); it != metadata.end()) {
    auto j = nlohmann::json::parse(it->second, nullptr, false);
    if (j.is_object() && j.contains("unet") && j["unet"].is_object() &&
        j["unet"].contains("lora_alpha") && j["unet"]["lora_alpha"].is_number()) {
      peft_alpha = j["unet"]["lora_alpha"].get<double>();
    }
  }
  std::map<std::string, Pair> pairs;  // by diffusers module
  for (const auto& [key, t] : *tensors) {
    std::string module, part;
    if (absl::StartsWith(key, "lora_te") || absl::StartsWith(key, "text_encoder")) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": ", key, " adapts a text encoder; text encoder adapters are not supported yet"));
    }
    if (absl::StartsWith(key, kKohyaPrefix)) {
      for (const char* suffix : {kDown, kUp, ".alpha"}) {
        if (absl::EndsWith(key, suffix)) {
          const std::string flat = key.substr(0, key.size() - strlen(suffix));
          auto it = by_kohya.find(flat);
          if (it == by_kohya.end()) {
            return absl::InvalidArgumentError(
                absl::StrCat(path, ": ", key, " names a layer this model does not have"));
          }
          module = it->second;
          part = suffix;
        }
      }
    } else if (absl::StartsWith(key, kPeftPrefix)) {
      for (const char* suffix : {kPeftA, kPeftB}) {
        if (absl::EndsWith(key, suffix)) {
          module = key.substr(strlen(kPeftPrefix), key.size() - strlen(kPeftPrefix) - strlen(suffix));
          part = suffix == kPeftA ? kDown : kUp;
        }
      }
      if (!module.empty() && slots.count(module) == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": ", key, " names a layer this model does not have"));
      }
    }
    if (module.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": ", key, " is neither a kohya nor a diffusers/PEFT LoRA key"));
    }
    Pair& p = pairs[module];
    if (part == kDown) {
      p.down = t;
    } else if (part == kUp) {
      p.up = t;
    } else {
      if (t.numel() != 1) return absl::InvalidArgumentError(absl::StrCat(path, ": ", key, " is not a scalar"));
      p.alpha = t.to(at::kDouble).item<double>();
    }
  }
  if (pairs.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no LoRA tensors"));
  try {
    for (auto& [module, p] : pairs) {
      if (!p.down.defined() || !p.up.defined()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": ", module, " lacks its ", p.down.defined() ? "up" : "down", " half"));
      }
      const double alpha = p.alpha > 0 ? p.alpha : peft_alpha;
      if (absl::Status s = Attach(*slots.at(module), module, p.down.to(at::kFloat),
                                  p.up.to(at::kFloat), alpha, multiplier);
          !s.ok()) {
        return s;
      }
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("loading LoRA: ", e.what_without_backtrace()));
  }
  return static_cast<int>(pairs.size());
}

void MergeLora(LoraSlots& slots) {
  at::NoGradGuard no_grad;
  for (auto& [module, slot] : slots) {
    if (!slot->down.defined()) continue;
    slot->weight.detach().add_(at::mm(slot->up.detach(), slot->down.detach()) * slot->scale);
    slot->down = at::Tensor();
    slot->up = at::Tensor();
    slot->scale = 1.0;
  }
}

}  // namespace dd::model
