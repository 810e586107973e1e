#include "trainer/collab/sync_config.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include <cmath>

#include "absl/strings/str_cat.h"

namespace dd::collab {
namespace {

using nlohmann::json;

absl::Status Bad(const std::string& key, const std::string& want) {
  return absl::InvalidArgumentError(absl::StrCat("run config: \"", key, "\" must be ", want));
}

absl::Status ReadDouble(const json& doc, const char* key, double lo, double hi, bool lo_open,
                        double* out) {
  auto it = doc.find(key);
  if (it == doc.end()) return absl::OkStatus();
  if (!it->is_number()) return Bad(key, "a number");
  const double v = it->get<double>();
  if (!std::isfinite(v) || v < lo || (lo_open && v == lo) || v >= hi) {
    return Bad(key, absl::StrCat("in ", lo_open ? "(" : "[", lo, ", ", hi, ")"));
  }
  *out = v;
  return absl::OkStatus();
}

absl::Status ReadBool(const json& doc, const char* key, bool* out) {
  auto it = doc.find(key);
  if (it == doc.end()) return absl::OkStatus();
  if (!it->is_boolean()) return Bad(key, "true or false");
  *out = it->get<bool>();
  return absl::OkStatus();
}

}  // namespace

const char* SyncModeName(SyncMode mode) {
  return mode == SyncMode::kOuter ? "outer" : "gradients";
}

absl::StatusOr<SyncConfig> ParseSyncConfig(const std::string& text) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) return absl::InvalidArgumentError("run config: not a JSON object");
  SyncConfig c;
  if (auto it = doc.find("sync"); it != doc.end()) {
    if (*it == "gradients") {
      c.mode = SyncMode::kGradients;
    } else if (*it == "outer") {
      c.mode = SyncMode::kOuter;
    } else {
      return Bad("sync", "\"gradients\" or \"outer\"");
    }
  }
  if (auto it = doc.find("codec"); it != doc.end()) {
    if (!it->is_string()) return Bad("codec", "a codec name");
    auto id = averaging::CodecIdNamed(it->get<std::string>());
    if (!id.ok()) return Bad("codec", "none, fp16, bf16, uniform8bit, blockwise8bit or topk8bit");
    c.codec = *id;
  }
  if (auto it = doc.find("local_steps"); it != doc.end()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > 1000000) {
      return Bad("local_steps", "an integer in [1, 1000000]");
    }
    c.outer.local_steps = it->get<int64_t>();
  }
  if (auto it = doc.find("max_local_steps"); it != doc.end()) {
    if (!it->is_number_integer() || it->get<int64_t>() < c.outer.local_steps ||
        it->get<int64_t>() > 1000000) {
      return Bad("max_local_steps", "an integer in [local_steps, 1000000]");
    }
    c.outer.max_local_steps = it->get<int64_t>();
  }
  absl::Status s = ReadDouble(doc, "outer_lr", 0, 1e6, /*lo_open=*/true, &c.outer.lr);
  if (s.ok()) s = ReadDouble(doc, "outer_momentum", 0, 1, /*lo_open=*/false, &c.outer.momentum);
  if (s.ok()) s = ReadBool(doc, "outer_nesterov", &c.outer.nesterov);
  if (s.ok()) s = ReadBool(doc, "error_feedback", &c.outer.error_feedback);
  if (s.ok()) s = ReadBool(doc, "overlap", &c.outer.overlap);
  if (s.ok()) s = ReadBool(doc, "open_run", &c.open_run);
  if (s.ok()) s = ReadDouble(doc, "clip_tau", 0, 1e12, /*lo_open=*/true, &c.clip_tau);
  if (s.ok()) s = ReadDouble(doc, "max_update_norm", 0, 1e12, /*lo_open=*/false, &c.max_update_norm);
  if (s.ok()) s = ReadDouble(doc, "lora_alpha", 0, 1e6, /*lo_open=*/false, &c.lora.alpha);
  if (!s.ok()) return s;
  if (auto it = doc.find("lora_rank"); it != doc.end()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > 1024) {
      return Bad("lora_rank", "an integer in [0, 1024]");
    }
    c.lora.rank = static_cast<int>(it->get<int64_t>());
  }
  if (auto it = doc.find("lora_targets"); it != doc.end()) {
    if (!it->is_array() || it->empty() || it->size() > 8) return Bad("lora_targets", "1 to 8 group names");
    for (const auto& t : *it) {
      if (!t.is_string() || t.get<std::string>().size() > 64) return Bad("lora_targets", "group names");
      c.lora.targets.push_back(t.get<std::string>());
    }
  }
  // Strangers' contributions are averaged robustly unless the run says
  // otherwise.
  c.aggregation = c.open_run ? averaging::Aggregation::kCenteredClip : averaging::Aggregation::kMean;
  if (auto it = doc.find("aggregation"); it != doc.end()) {
    if (*it == "mean") {
      c.aggregation = averaging::Aggregation::kMean;
    } else if (*it == "centered_clip") {
      c.aggregation = averaging::Aggregation::kCenteredClip;
    } else {
      return Bad("aggregation", "\"mean\" or \"centered_clip\"");
    }
  }
  s = CheckSyncConfig(c);
  if (!s.ok()) return s;
  return c;
}

int64_t MaxLocalSteps(const OuterOptions& options) {
  return options.max_local_steps > 0 ? std::max(options.max_local_steps, options.local_steps)
                                     : 2 * options.local_steps;
}

absl::Status CheckSyncConfig(const SyncConfig& c) {
  if (c.codec == averaging::CodecId::kTopK8Bit &&
      !(c.mode == SyncMode::kOuter && c.outer.error_feedback)) {
    // Without a residual, what the sparse codec leaves out (98 % of every
    // block) would be lost for good.
    return absl::InvalidArgumentError(
        "run config: \"codec\": \"topk8bit\" needs \"sync\": \"outer\" with \"error_feedback\": true");
  }
  return absl::OkStatus();
}

}  // namespace dd::collab
