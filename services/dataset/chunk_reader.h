// ChunkReader: random access to the bytes of one chunk, as described by the
// manifest, read straight from the source files (never built in memory).
//
// A chunk of repacked samples is a sequence of segments: for each member a
// 512-byte tar header (generated), the member's byte range in its source file,
// zero padding; then the 1024-byte end-of-archive marker. A whole-shard chunk
// is one segment: the shard file. Pure: no gRPC types.
#ifndef SERVICES_DATASET_CHUNK_READER_H_
#define SERVICES_DATASET_CHUNK_READER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/dataset/manifest.pb.h"

namespace dd::dataset {

namespace internal = ::distdiff::dataset::internal;
using internal::Chunk;
using internal::Manifest;

// One contiguous piece of a chunk's byte stream.
struct Segment {
  enum Kind { kInline, kFileRange, kZeros };
  Kind kind;
  uint64_t start;        // position in the chunk
  uint64_t length;
  std::string bytes;     // kInline: the bytes (tar headers)
  uint32_t file_index;   // kFileRange
  uint64_t file_offset;  // kFileRange
};

// The segments of `chunk` (which must belong to `manifest`), in order.
// InvalidArgument when a member name cannot be framed in a tar header or a
// member points at a file the manifest does not list.
absl::StatusOr<std::vector<Segment>> BuildLayout(const Manifest& manifest, const Chunk& chunk);

class ChunkReader {
 public:
  // `manifest` must outlive the reader. NotFound for an unknown chunk id.
  static absl::StatusOr<std::unique_ptr<ChunkReader>> Open(const Manifest& manifest,
                                                           uint64_t chunk_id);
  ~ChunkReader();

  ChunkReader(const ChunkReader&) = delete;
  ChunkReader& operator=(const ChunkReader&) = delete;

  uint64_t size() const { return size_; }

  // Copies up to `length` bytes at `offset` into `out` and returns how many
  // (fewer only at the end of the chunk). OutOfRange when offset > size().
  // DataLoss when a source file no longer matches the manifest (changed size
  // or modification time, missing, replaced by a symlink) or shrank while
  // being read.
  absl::StatusOr<size_t> ReadAt(uint64_t offset, char* out, size_t length);

 private:
  ChunkReader(const Manifest& manifest, std::vector<Segment> segments, uint64_t size);
  absl::Status EnsureOpen(uint32_t file_index);

  const Manifest& manifest_;
  const std::vector<Segment> segments_;
  const uint64_t size_;
  int fd_ = -1;              // open source file, if any
  uint32_t fd_index_ = 0;    // its index in manifest_.files()
};

}  // namespace dd::dataset

#endif  // SERVICES_DATASET_CHUNK_READER_H_
