#include "trainer/model/lora.h"

#include <ATen/core/grad_mode.h>
#include <cmath>
#include <map>
#include <tuple>

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
constexpr char kPeftA[] = ".lora_A.weight";
constexpr char kPeftB[] = ".lora_B.weight";

const std::map<std::string, std::vector<std::string>>& Groups() {
  static const auto* groups = new std::map<std::string, std::vector<std::string>>{
      {"attention", {".to_q", ".to_k", ".to_v", ".to_out.0"}},
      {"feed_forward", {".ff.net.0.proj", ".ff.net.2"}},
      {"projections", {".proj_in", ".proj_out"}},
      {"text_encoder", {".self_attn.q_proj", ".self_attn.k_proj", ".self_attn.v_proj", ".self_attn.out_proj"}},
      // The resnets' and samplers' convolutions (kohya's conv adapters).
      {"convolutions", {".conv1", ".conv2", ".conv_shortcut", "samplers.0.conv"}},
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
  const bool conv = slot.weight.dim() == 4;
  const bool fits =
      conv ? down.dim() == 4 && up.dim() == 4 && down.size(2) == slot.weight.size(2) &&
                 down.size(3) == slot.weight.size(3) && up.size(2) == 1 && up.size(3) == 1
           : down.dim() == 2 && up.dim() == 2;
  if (!fits || down.size(1) != in || up.size(0) != out || up.size(1) != down.size(0) || down.size(0) < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LoRA for ", module, ": down [", absl::StrJoin(down.sizes().vec(), ","), "] and up [",
        absl::StrJoin(up.sizes().vec(), ","), "] do not fit the layer's [",
        absl::StrJoin(slot.weight.sizes().vec(), ","), "]"));
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
          "unknown LoRA target \"", t, "\" (attention, feed_forward, projections, convolutions, text_encoder)"));
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
      const bool conv = slot->weight.dim() == 4;
      const int64_t k = conv ? slot->weight.size(2) : 1;
      const double bound = 1.0 / std::sqrt(static_cast<double>(in * k * k));
      at::Tensor down = (conv ? at::empty({o.rank, in, k, k}, at::kFloat) : at::empty({o.rank, in}, at::kFloat))
                            .uniform_(-bound, bound, generator);
      at::Tensor up = conv ? at::zeros({out, o.rank, 1, 1}, at::kFloat) : at::zeros({out, o.rank}, at::kFloat);
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

std::string KohyaName(const std::string& module, const std::string& prefix) {
  return prefix + absl::StrReplaceAll(module, {{".", "_"}});
}

std::vector<LoraModule> LoraModules(UNet* unet, ClipTextModel* text_encoder, ClipTextModel* text_encoder_2) {
  std::vector<LoraModule> out;
  if (unet != nullptr) out.push_back({"lora_unet_", "unet.", &unet->lora_slots()});
  if (text_encoder != nullptr) {
    out.push_back({text_encoder_2 != nullptr ? "lora_te1_" : "lora_te_", "text_encoder.",
                   &text_encoder->lora_slots()});
  }
  if (text_encoder_2 != nullptr) out.push_back({"lora_te2_", "text_encoder_2.", &text_encoder_2->lora_slots()});
  return out;
}

absl::Status SaveLora(const std::string& path, const std::vector<LoraModule>& modules, LoraFormat format,
                      double alpha, bool fp16) {
  std::map<std::string, at::Tensor> tensors;
  nlohmann::json adapter_metadata = nlohmann::json::object();
  int64_t rank = 0;
  try {
    auto stored = [fp16](const at::Tensor& t) {
      return t.detach().to(at::kCPU, fp16 ? at::kHalf : at::kFloat).contiguous();
    };
    for (const LoraModule& m : modules) {
      std::vector<std::string> targets;
      for (const auto& [module, slot] : *m.slots) {
        if (!slot->down.defined()) continue;
        rank = slot->down.size(0);
        targets.push_back(module);
        const double a = alpha > 0 ? alpha : double(rank);
        if (format == LoraFormat::kKohya) {
          const std::string k = KohyaName(module, m.kohya_prefix);
          tensors[k + kDown] = stored(slot->down);
          tensors[k + kUp] = stored(slot->up);
          tensors[k + ".alpha"] = at::scalar_tensor(a, at::kFloat).to(fp16 ? at::kHalf : at::kFloat);
        } else {
          tensors[m.peft_prefix + module + kPeftA] = stored(slot->down);
          tensors[m.peft_prefix + module + kPeftB] = stored(slot->up);
        }
      }
      if (!targets.empty()) {
        // What diffusers' save_lora_weights records for load_lora_weights.
        adapter_metadata[m.peft_prefix.substr(0, m.peft_prefix.size() - 1)] = {
            {"r", rank}, {"lora_alpha", alpha > 0 ? alpha : double(rank)}, {"target_modules", targets}};
      }
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("saving LoRA: ", e.what_without_backtrace()));
  }
  if (tensors.empty()) return absl::FailedPreconditionError("no LoRA adapter is attached");
  std::map<std::string, std::string> metadata;
  if (format == LoraFormat::kPeft) {
    metadata["lora_adapter_metadata"] = adapter_metadata.dump();
  } else {
    metadata["ss_network_module"] = "networks.lora";
    metadata["ss_network_dim"] = absl::StrCat(rank);
    metadata["ss_network_alpha"] = absl::StrCat(alpha > 0 ? alpha : double(rank));
  }
  metadata["format"] = "pt";
  return SaveTensors(path, tensors, metadata);
}

absl::StatusOr<int> LoadLora(const std::string& path, const std::vector<LoraModule>& modules,
                             double multiplier) {
  std::map<std::string, std::string> metadata;
  auto tensors = LoadTensors(path, &metadata);
  if (!tensors.ok()) return tensors.status();
  // Kohya names flatten dots: map them back through the modules' layers.
  std::map<std::string, std::pair<const LoraModule*, std::string>> by_kohya;
  for (const LoraModule& m : modules) {
    for (const auto& [module, slot] : *m.slots) by_kohya[KohyaName(module, m.kohya_prefix)] = {&m, module};
  }
  nlohmann::json adapter_metadata;
  if (auto it = metadata.find("lora_adapter_metadata"); it != metadata.end()) {
    adapter_metadata = nlohmann::json::parse(it->second, nullptr, false);
  }
  auto peft_alpha = [&](const LoraModule& m) {
    const std::string key = m.peft_prefix.substr(0, m.peft_prefix.size() - 1);
    if (adapter_metadata.is_object() && adapter_metadata.contains(key) && adapter_metadata[key].is_object() &&
        adapter_metadata[key].contains("lora_alpha") && adapter_metadata[key]["lora_alpha"].is_number()) {
      return adapter_metadata[key]["lora_alpha"].get<double>();
    }
    return 0.0;
  };
  struct Target {
    const LoraModule* module;
    std::string name;
    bool operator<(const Target& o) const { return std::tie(module, name) < std::tie(o.module, o.name); }
  };
  std::map<Target, Pair> pairs;
  for (const auto& [key, t] : *tensors) {
    Target target{nullptr, ""};
    std::string part;
    for (const char* suffix : {kDown, kUp, ".alpha"}) {
      if (!absl::EndsWith(key, suffix)) continue;
      auto it = by_kohya.find(key.substr(0, key.size() - strlen(suffix)));
      if (it != by_kohya.end()) {
        target = {it->second.first, it->second.second};
        part = suffix;
      }
    }
    if (target.module == nullptr) {
      // PEFT: the longest prefix first (text_encoder_2. before text_encoder.).
      const LoraModule* best = nullptr;
      for (const LoraModule& m : modules) {
        if (absl::StartsWith(key, m.peft_prefix) && (best == nullptr || m.peft_prefix.size() > best->peft_prefix.size())) {
          best = &m;
        }
      }
      for (const char* suffix : {kPeftA, kPeftB}) {
        if (best != nullptr && absl::EndsWith(key, suffix)) {
          const std::string name =
              key.substr(best->peft_prefix.size(), key.size() - best->peft_prefix.size() - strlen(suffix));
          if (best->slots->count(name)) {
            target = {best, name};
            part = suffix == kPeftA ? kDown : kUp;
          }
        }
      }
    }
    if (target.module == nullptr) {
      const bool lora_key = absl::StartsWith(key, "lora_") || absl::StrContains(key, ".lora_A.") ||
                            absl::StrContains(key, ".lora_B.");
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": ", key,
          lora_key ? " names a layer this model does not have"
                   : " is neither a kohya nor a diffusers/PEFT LoRA key"));
    }
    Pair& p = pairs[target];
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
    for (auto& [target, p] : pairs) {
      if (!p.down.defined() || !p.up.defined()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": ", target.name, " lacks its ",
                                                       p.down.defined() ? "up" : "down", " half"));
      }
      const double alpha = p.alpha > 0 ? p.alpha : peft_alpha(*target.module);
      if (absl::Status s = Attach(*target.module->slots->at(target.name), target.name, p.down.to(at::kFloat),
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
    const at::Tensor up = slot->up.detach().flatten(1), down = slot->down.detach().flatten(1);
    slot->weight.detach().add_((at::mm(up, down) * slot->scale).view(slot->weight.sizes()));
    slot->down = at::Tensor();
    slot->up = at::Tensor();
    slot->scale = 1.0;
  }
}

}  // namespace dd::model
