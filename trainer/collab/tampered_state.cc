#include "trainer/collab/tampered_state.h"

#include <limits>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "trainer/model/torch_tensors.h"

namespace dd::collab {

absl::StatusOr<StateTamper> ParseStateTamper(absl::string_view name) {
  if (name.empty()) return StateTamper::kNone;
  if (name == "weights") return StateTamper::kWeights;
  if (name == "nan") return StateTamper::kNan;
  if (name == "oversize") return StateTamper::kOversize;
  return absl::InvalidArgumentError(
      absl::StrCat("a state tamper is weights, nan or oversize, not \"", name, "\""));
}

absl::StatusOr<std::string> TamperedState(StateTamper tamper, std::string bytes,
                                          uint64_t max_bytes) {
  if (tamper == StateTamper::kNone) return bytes;
  if (tamper == StateTamper::kOversize) {
    bytes.resize(max_bytes + 1, '\0');
    return bytes;
  }
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> meta;
  RETURN_IF_ERROR(model::ParseTensors(bytes, &tensors, &meta));
  for (auto& [name, t] : tensors) {
    if (!absl::StartsWith(name, "param.") || t.scalar_type() != at::kFloat || t.numel() == 0) continue;
    t = t.clone();
    float* first = t.data_ptr<float>();
    *first = tamper == StateTamper::kNan ? std::numeric_limits<float>::quiet_NaN() : *first + 1e-3f;
    return model::SerializeTensors(tensors, meta);
  }
  return absl::InternalError("no float32 parameter in the state to tamper with");
}

}  // namespace dd::collab
