// Between safetensors files and libtorch tensors. The only place where
// c10::Error from these conversions is turned into absl::Status.
#ifndef TRAINER_MODEL_TORCH_TENSORS_H_
#define TRAINER_MODEL_TORCH_TENSORS_H_

#include <ATen/ATen.h>

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "trainer/model/safetensors.h"

namespace dd::model {

// A CPU tensor holding a copy of `view` (F64, F32, F16, BF16, I64, I32, I16,
// I8, U8, BOOL). InvalidArgument for a dtype libtorch cannot hold.
absl::StatusOr<at::Tensor> ToTensor(const TensorView& view);

// The safetensors dtype of a libtorch scalar type.
absl::StatusOr<DType> FromScalarType(at::ScalarType type);

// Every tensor of a safetensors file, by name.
absl::StatusOr<std::map<std::string, at::Tensor>> LoadTensors(const std::string& path);

// The weights of one part of a diffusers folder: `dir`/`stem`.safetensors,
// or, for sharded checkpoints, the files listed by
// `dir`/`stem`.safetensors.index.json ("weight_map": tensor -> file). Every
// tensor the index names must be in the file it names (InvalidArgument
// otherwise); NotFound when neither form exists.
absl::StatusOr<std::map<std::string, at::Tensor>> LoadPartTensors(const std::string& dir,
                                                                  const std::string& stem);

// Writes `tensors` (CPU, any supported dtype) and `metadata` to a
// safetensors file atomically.
absl::Status SaveTensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

// One part of a diffusers folder: creates `dir`, writes `dir`/config.json
// and `dir`/`weights_file` (safetensors, format "pt").
absl::Status SaveDiffusersPart(const std::string& dir, const std::string& config_json,
                               const std::string& weights_file,
                               const std::map<std::string, at::Tensor>& tensors);

// SaveTensors into memory, and its inverse (every tensor copied out).
absl::StatusOr<std::string> SerializeTensors(const std::map<std::string, at::Tensor>& tensors,
                                             const std::map<std::string, std::string>& metadata);
absl::Status ParseTensors(const std::string& bytes, std::map<std::string, at::Tensor>* tensors,
                          std::map<std::string, std::string>* metadata);

// The __metadata__ of a safetensors file.
absl::StatusOr<std::map<std::string, std::string>> LoadMetadata(const std::string& path);

}  // namespace dd::model

#endif  // TRAINER_MODEL_TORCH_TENSORS_H_
