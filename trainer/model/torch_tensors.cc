#include "trainer/model/torch_tensors.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"
#include "common/io/file_util.h"

namespace dd::model {

absl::StatusOr<at::Tensor> ToTensor(const TensorView& view) {
  at::ScalarType type;
  switch (view.dtype) {
    case DType::kF64: type = at::kDouble; break;
    case DType::kF32: type = at::kFloat; break;
    case DType::kF16: type = at::kHalf; break;
    case DType::kBF16: type = at::kBFloat16; break;
    case DType::kI64: type = at::kLong; break;
    case DType::kI32: type = at::kInt; break;
    case DType::kI16: type = at::kShort; break;
    case DType::kI8: type = at::kChar; break;
    case DType::kU8: type = at::kByte; break;
    case DType::kBool: type = at::kBool; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("tensor ", view.name, ": unsupported dtype"));
  }
  try {
    // from_blob does not copy; clone so the tensor outlives the mapping.
    return at::from_blob(const_cast<uint8_t*>(view.data), view.shape,
                         at::TensorOptions().dtype(type))
        .clone();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("tensor ", view.name, ": ", e.what_without_backtrace()));
  }
}

absl::StatusOr<DType> FromScalarType(at::ScalarType type) {
  switch (type) {
    case at::kDouble: return DType::kF64;
    case at::kFloat: return DType::kF32;
    case at::kHalf: return DType::kF16;
    case at::kBFloat16: return DType::kBF16;
    case at::kLong: return DType::kI64;
    case at::kInt: return DType::kI32;
    case at::kShort: return DType::kI16;
    case at::kChar: return DType::kI8;
    case at::kByte: return DType::kU8;
    case at::kBool: return DType::kBool;
    default:
      return absl::InvalidArgumentError(absl::StrCat("no safetensors dtype for ", at::toString(type)));
  }
}

absl::StatusOr<std::map<std::string, at::Tensor>> LoadTensors(
    const std::string& path, std::map<std::string, std::string>* metadata) {
  auto file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  if (metadata != nullptr) *metadata = (*file)->metadata();
  std::map<std::string, at::Tensor> out;
  for (const auto& view : (*file)->tensors()) {
    auto t = ToTensor(view);
    if (!t.ok()) return absl::Status(t.status().code(), absl::StrCat(path, ": ", t.status().message()));
    out[view.name] = std::move(*t);
  }
  return out;
}

absl::StatusOr<std::map<std::string, at::Tensor>> LoadPartTensors(const std::string& dir,
                                                                  const std::string& stem) {
  std::string single = absl::StrCat(dir, "/", stem, ".safetensors");
  if (std::filesystem::exists(single)) return LoadTensors(single);
  std::string index_path = single + ".index.json";
  if (!std::filesystem::exists(index_path)) {
    // A folder with only a variant's weights (stem.fp16.safetensors, as a
    // Hub download of that variant holds): that variant, when it is the only one.
    std::vector<std::string> variants;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      const std::string name = e.path().filename().string();
      if (absl::StartsWith(name, stem + ".") && absl::EndsWith(name, ".safetensors") &&
          std::count(name.begin(), name.end(), '.') == std::count(stem.begin(), stem.end(), '.') + 2) {
        variants.push_back(name);
      }
    }
    if (variants.size() == 1) return LoadTensors(absl::StrCat(dir, "/", variants[0]));
    if (variants.size() > 1) {
      return absl::InvalidArgumentError(absl::StrCat(dir, " holds only variants of ", stem, ".safetensors (",
                                                     absl::StrJoin(variants, ", "), "): keep one"));
    }
  }
  auto text = ReadFileToString(index_path);
  if (!text.ok()) {
    return absl::NotFoundError(absl::StrCat("neither ", single, " nor ", index_path, " exists"));
  }
  nlohmann::json index = nlohmann::json::parse(*text, nullptr, false);
  if (index.is_discarded() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, " has no \"weight_map\" object"));
  }
  std::map<std::string, std::set<std::string>> by_file;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    if (!it->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": entry for \"", it.key(),
                                                     "\" is not a file name"));
    }
    std::string file = it->get<std::string>();
    if (file.find('/') != std::string::npos || file.find("..") != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": shard \"", file,
                                                     "\" must be a file beside the index"));
    }
    by_file[file].insert(it.key());
  }
  std::map<std::string, at::Tensor> out;
  for (const auto& [file, names] : by_file) {
    auto shard = LoadTensors(absl::StrCat(dir, "/", file));
    if (!shard.ok()) return shard.status();
    for (const std::string& name : names) {
      auto t = shard->find(name);
      if (t == shard->end()) {
        return absl::InvalidArgumentError(absl::StrCat(index_path, " places \"", name, "\" in ",
                                                       file, ", which does not hold it"));
      }
      out[name] = t->second;
    }
  }
  return out;
}

namespace {

absl::StatusOr<std::vector<TensorToWrite>> ToWrite(const std::map<std::string, at::Tensor>& tensors) {
  std::vector<TensorToWrite> out;
  try {
    for (const auto& [name, tensor] : tensors) {
      at::Tensor t = tensor.detach().cpu().contiguous();
      auto dtype = FromScalarType(t.scalar_type());
      if (!dtype.ok()) return dtype.status();
      out.push_back({name, *dtype, t.sizes().vec(),
                     std::string(static_cast<const char*>(t.data_ptr()), t.nbytes())});
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("serializing tensors: ", e.what_without_backtrace()));
  }
  return out;
}

}  // namespace

absl::Status SaveTensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  auto out = ToWrite(tensors);
  if (!out.ok()) return out.status();
  return WriteSafetensors(path, *out, metadata);
}

absl::Status SaveDiffusersPart(const std::string& dir, const std::string& config_json,
                               const std::string& weights_file,
                               const std::map<std::string, at::Tensor>& tensors) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  if (absl::Status s = WriteFileAtomically(dir + "/config.json", config_json); !s.ok()) return s;
  return SaveTensors(dir + "/" + weights_file, tensors, {{"format", "pt"}});
}

absl::Status SaveDiffusersPart(const std::string& dir, const std::string& config_json,
                               const std::string& weights_file,
                               const std::vector<ModelParameter>& parameters) {
  std::map<std::string, at::Tensor> tensors;
  try {
    for (const ModelParameter& p : parameters) tensors[p.name] = p.value.detach().to(p.file_dtype);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("saving ", dir, ": ", e.what_without_backtrace()));
  }
  return SaveDiffusersPart(dir, config_json, weights_file, tensors);
}

absl::StatusOr<std::string> SerializeTensors(const std::map<std::string, at::Tensor>& tensors,
                                             const std::map<std::string, std::string>& metadata) {
  auto out = ToWrite(tensors);
  if (!out.ok()) return out.status();
  return SerializeSafetensors(*out, metadata);
}

absl::Status ParseTensors(const std::string& bytes, std::map<std::string, at::Tensor>* tensors,
                          std::map<std::string, std::string>* metadata) {
  auto file = SafetensorsFile::FromBuffer(bytes, "state");
  if (!file.ok()) return file.status();
  for (const TensorView& view : (*file)->tensors()) {
    auto t = ToTensor(view);
    if (!t.ok()) return t.status();
    (*tensors)[view.name] = std::move(*t);
  }
  *metadata = (*file)->metadata();
  return absl::OkStatus();
}

absl::StatusOr<at::ScalarType> StorageDtype(const std::string& name) {
  if (name == "fp16") return at::kHalf;
  if (name == "bf16") return at::kBFloat16;
  if (name == "fp32") return at::kFloat;
  return absl::InvalidArgumentError(absl::StrCat("dtype \"", name, "\": use fp16, bf16 or fp32"));
}

}  // namespace dd::model
