// Indexer: turns a dataset folder into an immutable manifest of chunks.
//
// Input: a folder searched recursively for image + caption pairs
// (`name.jpg|jpeg|png|webp` beside `name.txt`, optional `name.json`) and
// WebDataset `.tar` shards (`key.<image ext>` + `key.txt` [+ `key.json`]).
// A shard whose members are all complete samples in canonical framing is
// served unchanged as one chunk; the complete samples of any other shard are
// repacked with the loose files. Images without captions, orphan captions,
// empty images, unreadable shards and symbolic links leading out of the root
// are skipped and reported, never served.
//
// Order is deterministic (sorted relative paths): whole-shard chunks first,
// then loose samples in groups of `chunk_size`. Every member's size and
// SHA-256 and every chunk's size and SHA-256 are recorded.
//
// The manifest is saved in `work_dir` and reused on the next start when the
// set of files and their sizes and modification times are unchanged.
// Pure: no gRPC types.
#ifndef SERVICES_DATASET_INDEXER_H_
#define SERVICES_DATASET_INDEXER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "services/dataset/manifest.pb.h"

namespace dd::dataset {

namespace internal = ::distdiff::dataset::internal;

// Bumped whenever the manifest's meaning changes, forcing a rebuild.
inline constexpr uint32_t kManifestFormatVersion = 1;

struct IndexOptions {
  std::string dataset_dir;
  // Where manifest.pb is kept; empty: build in memory only. When inside
  // dataset_dir it is excluded from the walk.
  std::string work_dir;
  uint32_t chunk_size = 256;  // samples per repacked chunk, >= 1
};

struct IndexResult {
  internal::Manifest manifest;
  bool reused = false;  // loaded from work_dir instead of rebuilt
};

// Builds a fresh manifest (reads and hashes every file), showing a progress
// line. NotFound / FailedPrecondition when dataset_dir is not a readable
// folder; InvalidArgument for chunk_size 0; Aborted when a file changes while
// being indexed.
absl::StatusOr<internal::Manifest> BuildManifest(const IndexOptions& options);

// Returns the manifest saved in work_dir if it still describes dataset_dir
// (same root, chunk size, files, sizes and modification times), else builds
// and saves a new one. A corrupt saved manifest is rebuilt, with a warning.
absl::StatusOr<IndexResult> LoadOrBuildManifest(const IndexOptions& options);

// Path of the saved manifest inside `work_dir`.
std::string ManifestPath(const std::string& work_dir);

}  // namespace dd::dataset

#endif  // SERVICES_DATASET_INDEXER_H_
