// safetensors: the weight format of diffusers folders (huggingface/safetensors).
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
//  "__metadata__": {string: string}}, then the data region; offsets are
// relative to the data region. Reading maps the file and checks everything
// before any byte is used: the header against the file size, every tensor's
// dtype, shape, byte range (inside the region, size = product(shape) * dtype
// size, no overlaps, no holes). Errors name the file and the tensor.
// Pure C++ (no libtorch): the model code wraps views into tensors.
#ifndef TRAINER_MODEL_SAFETENSORS_H_
#define TRAINER_MODEL_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dd::model {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// "F32" and friends; InvalidArgument for anything else.
absl::StatusOr<DType> ParseDType(absl::string_view name);
const char* DTypeName(DType dtype);
size_t DTypeSize(DType dtype);

// Largest header accepted (the format's reference implementation uses 100 MB).
inline constexpr uint64_t kMaxHeaderBytes = 100 << 20;

struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // inside the mapped file
  size_t nbytes = 0;
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Maps and validates `path`. NotFound/PermissionDenied for the file;
  // DataLoss for a truncated file or a header that does not fit it;
  // InvalidArgument for malformed JSON, unknown dtypes, bad shapes or
  // offsets (each message names the file and the tensor).
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  // Validates an in-memory buffer (kept alive by the caller) the same way.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBuffer(absl::string_view bytes,
                                                                     std::string name);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // Tensors in header order.
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // NotFound naming the file when absent.
  absl::StatusOr<const TensorView*> Find(absl::string_view name) const;

 private:
  SafetensorsFile() = default;
  absl::Status Parse(const uint8_t* bytes, size_t size);

  std::string path_;
  void* mapping_ = nullptr;
  size_t mapped_size_ = 0;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
};

struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::string bytes;  // little-endian, product(shape) * DTypeSize(dtype)
};

// Serializes tensors (sorted by name, contiguous, header padded with spaces
// to a multiple of 8 as the reference writer does). InvalidArgument for a
// size that does not match the shape or a duplicate name.
absl::StatusOr<std::string> SerializeSafetensors(
    const std::vector<TensorToWrite>& tensors,
    const std::map<std::string, std::string>& metadata = {});

// SerializeSafetensors, then written atomically to `path`.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace dd::model

#endif  // TRAINER_MODEL_SAFETENSORS_H_
