// Between safetensors files and libtorch tensors. The only place where
// c10::Error from these conversions is turned into absl::Status.
#ifndef TRAINER_MODEL_TORCH_TENSORS_H_
#define TRAINER_MODEL_TORCH_TENSORS_H_

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/model/safetensors.h"

namespace dd::model {

// A CPU tensor holding a copy of `view` (F64, F32, F16, BF16, I64, I32, I16,
// I8, U8, BOOL). InvalidArgument for a dtype libtorch cannot hold.
absl::StatusOr<at::Tensor> ToTensor(const TensorView& view);

// The safetensors dtype of a libtorch scalar type.
absl::StatusOr<DType> FromScalarType(at::ScalarType type);

// Every tensor of a safetensors file, by name; its __metadata__ into
// `metadata` when given (one open of the file for both).
absl::StatusOr<std::map<std::string, at::Tensor>> LoadTensors(
    const std::string& path, std::map<std::string, std::string>* metadata = nullptr);

// The weights of one part of a diffusers folder: `dir`/`stem`.safetensors,
// or, for sharded checkpoints, the files listed by
// `dir`/`stem`.safetensors.index.json ("weight_map": tensor -> file). Every
// tensor the index names must be in the file it names (InvalidArgument
// otherwise); NotFound when neither form exists.
absl::StatusOr<std::map<std::string, at::Tensor>> LoadPartTensors(const std::string& dir,
                                                                  const std::string& stem);

// The floating dtype a model is stored in, by the names the tools take:
// "fp16", "bf16" or "fp32" (InvalidArgument otherwise).
absl::StatusOr<at::ScalarType> StorageDtype(const std::string& name);

// Writes `tensors` (CPU, any supported dtype) and `metadata` to a
// safetensors file atomically.
absl::Status SaveTensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

// One part of a diffusers folder: creates `dir`, writes `dir`/config.json
// and `dir`/`weights_file` (safetensors, format "pt").
absl::Status SaveDiffusersPart(const std::string& dir, const std::string& config_json,
                               const std::string& weights_file,
                               const std::map<std::string, at::Tensor>& tensors);

// A model weight as the modules use it (float32, on any device) with the
// dtype it had in its file, so it can be written back the same way. The
// UNet, the VAE and the CLIP text model all expose theirs as these.
struct ModelParameter {
  std::string name;
  at::Tensor value;
  at::ScalarType file_dtype;
};

// SaveDiffusersPart with every parameter converted back to its file dtype.
absl::Status SaveDiffusersPart(const std::string& dir, const std::string& config_json,
                               const std::string& weights_file,
                               const std::vector<ModelParameter>& parameters);

// SaveTensors into memory, and its inverse (every tensor copied out).
absl::StatusOr<std::string> SerializeTensors(const std::map<std::string, at::Tensor>& tensors,
                                             const std::map<std::string, std::string>& metadata);
absl::Status ParseTensors(const std::string& bytes, std::map<std::string, at::Tensor>* tensors,
                          std::map<std::string, std::string>* metadata);

}  // namespace dd::model

#endif  // TRAINER_MODEL_TORCH_TENSORS_H_
