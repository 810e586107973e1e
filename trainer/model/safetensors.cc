#include "trainer/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/io/file_util.h"

namespace dd::model {
namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::kF64, "F64", 8}, {DType::kF32, "F32", 4}, {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2}, {DType::kI8, "I8", 1}, {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1},
};

// Multiplies with overflow detection.
bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

}  // namespace

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  for (const auto& d : kDTypes) {
    if (name == d.name) return d.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype \"", name, "\""));
}

const char* DTypeName(DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) return d.name;
  }
  return "?";
}

size_t DTypeSize(DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) return d.size;
  }
  return 0;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "cannot open", path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoToStatus(err, "cannot stat", path);
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  size_t size = st.st_size;
  if (size > 0) {
    void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      return ErrnoToStatus(err, "cannot map", path);
    }
    file->mapping_ = m;
    file->mapped_size_ = size;
  }
  ::close(fd);
  absl::Status s = file->Parse(static_cast<const uint8_t*>(file->mapping_), size);
  if (!s.ok()) return s;
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBuffer(
    absl::string_view bytes, std::string name) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = std::move(name);
  absl::Status s = file->Parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  if (!s.ok()) return s;
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapped_size_);
}

absl::Status SafetensorsFile::Parse(const uint8_t* bytes, size_t size) {
  auto fail = [&](absl::StatusCode code, const std::string& what) {
    return absl::Status(code, absl::StrCat(path_, ": ", what));
  };
  if (size < 8) return fail(absl::StatusCode::kDataLoss, "shorter than the 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > kMaxHeaderBytes) {
    return fail(absl::StatusCode::kInvalidArgument,
                absl::StrCat("header length ", header_len, " exceeds ", kMaxHeaderBytes));
  }
  if (header_len > size - 8) {
    return fail(absl::StatusCode::kDataLoss,
                absl::StrCat("header of ", header_len, " bytes is longer than the file (", size,
                             " bytes): truncated?"));
  }
  const char* header = reinterpret_cast<const char*>(bytes + 8);
  nlohmann::json doc = nlohmann::json::parse(header, header + header_len, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    return fail(absl::StatusCode::kInvalidArgument, "header is not a JSON object");
  }
  const uint8_t* data = bytes + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  struct Range {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Range> ranges;
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it->is_object()) return fail(absl::StatusCode::kInvalidArgument, "__metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) {
          return fail(absl::StatusCode::kInvalidArgument, "__metadata__ values must be strings");
        }
        metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& why) {
      return fail(absl::StatusCode::kInvalidArgument, absl::StrCat("tensor \"", name, "\": ", why));
    };
    const nlohmann::json& t = *it;
    if (!t.is_object() || !t.contains("dtype") || !t.contains("shape") ||
        !t.contains("data_offsets")) {
      return bad("needs dtype, shape and data_offsets");
    }
    if (!t["dtype"].is_string()) return bad("dtype is not a string");
    auto dtype = ParseDType(t["dtype"].get<std::string>());
    if (!dtype.ok()) return bad(std::string(dtype.status().message()));
    TensorView view;
    view.name = name;
    view.dtype = *dtype;
    uint64_t numel = 1;
    if (!t["shape"].is_array()) return bad("shape is not an array");
    for (const auto& d : t["shape"]) {
      if (!d.is_number_unsigned()) return bad("shape has a negative or non-integer dimension");
      uint64_t dim = d.get<uint64_t>();
      if (dim > (uint64_t{1} << 40) || MulOverflows(numel, dim, &numel)) return bad("shape overflows");
      view.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& off = t["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned()) {
      return bad("data_offsets must be two non-negative integers");
    }
    uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    uint64_t expected;
    if (MulOverflows(numel, DTypeSize(*dtype), &expected)) return bad("size overflows");
    if (end < begin || end > data_size) {
      return bad(absl::StrCat("data_offsets [", begin, ", ", end, ") are outside the data region of ",
                              data_size, " bytes"));
    }
    if (end - begin != expected) {
      return bad(absl::StrCat("holds ", end - begin, " bytes but shape and dtype need ", expected));
    }
    view.data = data + begin;
    view.nbytes = end - begin;
    if (by_name_.count(name)) return bad("appears twice");
    by_name_[name] = tensors_.size();
    ranges.push_back({begin, end, tensors_.size()});
    tensors_.push_back(std::move(view));
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin < b.begin; });
  uint64_t covered = 0;
  for (const Range& r : ranges) {
    if (r.begin < covered) {
      return fail(absl::StatusCode::kInvalidArgument,
                  absl::StrCat("tensor \"", tensors_[r.index].name, "\" overlaps another tensor"));
    }
    if (r.begin > covered) {
      return fail(absl::StatusCode::kInvalidArgument,
                  absl::StrCat("bytes [", covered, ", ", r.begin, ") of the data region belong to no tensor"));
    }
    covered = r.end;
  }
  if (covered != data_size) {
    return fail(absl::StatusCode::kInvalidArgument,
                absl::StrCat("the data region has ", data_size - covered, " trailing bytes that belong to no tensor"));
  }
  return absl::OkStatus();
}

absl::StatusOr<const TensorView*> SafetensorsFile::Find(absl::string_view name) const {
  auto it = by_name_.find(std::string(name));
  if (it == by_name_.end()) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor \"", name, "\""));
  }
  return &tensors_[it->second];
}

absl::StatusOr<std::string> SerializeSafetensors(
    const std::vector<TensorToWrite>& tensors, const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorToWrite*> sorted;
  for (const auto& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(),
            [](const TensorToWrite* a, const TensorToWrite* b) { return a->name < b->name; });
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (size_t i = 0; i < sorted.size(); ++i) {
    const TensorToWrite& t = *sorted[i];
    if (i > 0 && sorted[i - 1]->name == t.name) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", t.name, "\" appears twice"));
    }
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) return absl::InvalidArgumentError(absl::StrCat("tensor \"", t.name, "\": negative dimension"));
      numel *= static_cast<uint64_t>(d);
    }
    if (numel * DTypeSize(t.dtype) != t.bytes.size()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", t.name, "\": ", t.bytes.size(),
                                                     " bytes do not match its shape and dtype"));
    }
    header[t.name] = {{"dtype", DTypeName(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += json;
  for (const TensorToWrite* t : sorted) out += t->bytes;
  return out;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  auto bytes = SerializeSafetensors(tensors, metadata);
  if (!bytes.ok()) return bytes.status();
  return WriteFileAtomically(path, *bytes);
}

}  // namespace dd::model
