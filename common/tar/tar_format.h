// The tar (ustar) framing used by dataset chunks and WebDataset shards.
//
// Writing: chunks are produced deterministically (fixed mode, owner and mtime)
// so that the same manifest always yields the same bytes and SHA-256.
// Reading: the ustar, GNU (long names) and POSIX pax variants that img2dataset
// and Python's tarfile write; anything else is reported, never guessed.
#ifndef COMMON_TAR_TAR_FORMAT_H_
#define COMMON_TAR_TAR_FORMAT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dd::tar {

inline constexpr uint64_t kBlockSize = 512;
// Two zero blocks end an archive.
inline constexpr uint64_t kTrailerSize = 2 * kBlockSize;
// Longest member name a plain ustar header can hold without a prefix field.
inline constexpr size_t kMaxNameLength = 100;

// Bytes of zero padding after a member of `size` bytes.
inline uint64_t PaddingFor(uint64_t size) {
  return (kBlockSize - size % kBlockSize) % kBlockSize;
}

// Bytes a member of `size` bytes occupies: header, data, padding.
inline uint64_t MemberSpan(uint64_t size) {
  return kBlockSize + size + PaddingFor(size);
}

// Returns the 512-byte ustar header of a regular file `name` of `size` bytes
// (mode 0644, uid/gid 0, mtime 0). InvalidArgument when the name is empty,
// longer than 100 bytes, absolute, or contains "..".
absl::StatusOr<std::string> MakeFileHeader(absl::string_view name, uint64_t size);

// One regular-file member found in an archive.
struct Entry {
  std::string name;      // full path inside the archive (pax/GNU names applied)
  uint64_t data_offset;  // where its bytes start in the archive
  uint64_t size;         // its length
};

struct ReadResult {
  std::vector<Entry> entries;
  // True when the archive used pax or GNU extension headers (the entry list
  // is still exact, but such an archive is not in the project's canonical
  // framing).
  bool used_extensions = false;
  // Names of non-regular members (directories, links, devices), skipped.
  std::vector<std::string> skipped_members;
};

// Reads `length` bytes at `offset` into `out`; returns the count read (short
// only at end of file).
using ReadAtFn = std::function<absl::StatusOr<size_t>(uint64_t offset, size_t length, char* out)>;

// Lists the regular-file members of an archive of `archive_size` bytes.
// DataLoss for a bad header checksum, a member running past the end, or a
// missing end-of-archive marker before `archive_size` (truncated file).
absl::StatusOr<ReadResult> ListEntries(const ReadAtFn& read_at, uint64_t archive_size);

// ListEntries over a file on disk.
absl::StatusOr<ReadResult> ListFileEntries(const std::string& path);

}  // namespace dd::tar

#endif  // COMMON_TAR_TAR_FORMAT_H_
