// DatasetCatalog: the logic of the dataset service over a loaded manifest
// (info, paging, validated chunk streams), with no gRPC types; the service
// adapter (dataset_service.h) only moves its results onto the wire.
#ifndef SERVICES_DATASET_CATALOG_H_
#define SERVICES_DATASET_CATALOG_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/crypto/sha256.h"
#include "protos/dataset.pb.h"
#include "services/dataset/chunk_reader.h"
#include "services/dataset/manifest.pb.h"

namespace dd::dataset {

namespace v1 = ::distdiff::dataset::v1;

// Largest `data` of one ChunkFrame.
inline constexpr size_t kMaxFrameBytes = 1 << 20;
inline constexpr uint32_t kDefaultPageSize = 1000;
inline constexpr uint32_t kMaxPageSize = 10000;
inline constexpr char kServerVersion[] = "distributed-diffusion dataset v1";

struct CatalogMetadata {
  std::string name = "Dataset Server";
  std::string description;
};

// Streams one chunk from an offset, frame by frame, checking the bytes
// against the manifest's SHA-256. Not thread-safe; one per ReadChunk call.
class ChunkStream {
 public:
  ChunkStream(std::unique_ptr<ChunkReader> reader, uint64_t offset, Sha256Digest expected,
              uint64_t chunk_id, size_t frame_bytes);

  // Fills `frame` with the next up to `frame_bytes`. Returns OK with an empty
  // frame (and done() true) at the end, after the whole chunk's hash matched.
  // DataLoss when a file changed since indexing (then the stream must end with
  // that status; the bytes already sent are not the chunk).
  absl::Status Next(v1::ChunkFrame* frame);

  bool done() const { return done_; }

 private:
  const std::unique_ptr<ChunkReader> reader_;
  const Sha256Digest expected_;
  const uint64_t chunk_id_;
  const size_t frame_bytes_;
  uint64_t start_;    // requested offset; bytes before it are hashed, not sent
  uint64_t hashed_ = 0;
  Sha256 hash_;
  bool done_ = false;
};

class DatasetCatalog {
 public:
  DatasetCatalog(internal::Manifest manifest, CatalogMetadata metadata, int64_t start_unix_ms);

  const internal::Manifest& manifest() const { return manifest_; }

  v1::DatasetInfo GetInfo() const;

  // A page of chunks. InvalidArgument for a foreign or malformed page_token or
  // page_size > kMaxPageSize (0 means kDefaultPageSize).
  absl::StatusOr<v1::ListChunksResponse> ListChunks(uint32_t page_size,
                                                    const std::string& page_token) const;

  // NotFound for an unknown chunk; OutOfRange for offset > size.
  // `frame_bytes` (1..kMaxFrameBytes) bounds each frame's data.
  absl::StatusOr<std::unique_ptr<ChunkStream>> OpenStream(
      uint64_t chunk_id, uint64_t offset, size_t frame_bytes = kMaxFrameBytes) const;

 private:
  const internal::Manifest manifest_;
  const CatalogMetadata metadata_;
  const int64_t start_unix_ms_;
  const std::string token_prefix_;  // ties page tokens to this manifest
};

}  // namespace dd::dataset

#endif  // SERVICES_DATASET_CATALOG_H_
