// Small file helpers with absl::Status errors that name the path.
#ifndef COMMON_IO_FILE_UTIL_H_
#define COMMON_IO_FILE_UTIL_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dd {

// The user's cache folder: $XDG_CACHE_HOME, else $HOME/.cache (/tmp/.cache
// without a home), as the XDG base directory specification says.
std::string UserCacheDir();

// Reads a whole file. Refuses files larger than `max_bytes` with
// ResourceExhausted (so a mistaken path cannot exhaust memory).
absl::StatusOr<std::string> ReadFileToString(const std::string& path,
                                             uint64_t max_bytes = 64 << 20);

// Writes `contents` so that a crash leaves either the old file or the new one:
// write to a temporary file beside `path`, fsync it, rename over `path`, fsync
// the directory.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view contents);

// Recreates the tree under `from` at `to`, hard-linking each file (copying
// when a link is impossible, e.g. across file systems), for the top-level
// entries of `from` whose name `keep` accepts. A model folder's frozen
// parts cost no space this way. Errors name the path.
absl::Status LinkOrCopyTree(const std::string& from, const std::string& to,
                            const std::function<bool(const std::string& top_level_name)>& keep);

// Maps errno from a failed call on `path` to a canonical status.
absl::Status ErrnoToStatus(int err, absl::string_view what,
                           absl::string_view path);

}  // namespace dd

#endif  // COMMON_IO_FILE_UTIL_H_
