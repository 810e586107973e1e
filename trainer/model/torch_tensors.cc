#include "trainer/model/torch_tensors.h"

#include "absl/strings/str_cat.h"

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

absl::StatusOr<std::map<std::string, at::Tensor>> LoadTensors(const std::string& path) {
  auto file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  std::map<std::string, at::Tensor> out;
  for (const auto& view : (*file)->tensors()) {
    auto t = ToTensor(view);
    if (!t.ok()) return absl::Status(t.status().code(), absl::StrCat(path, ": ", t.status().message()));
    out[view.name] = std::move(*t);
  }
  return out;
}

}  // namespace dd::model
