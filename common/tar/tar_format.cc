#include "common/tar/tar_format.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/io/file_util.h"

namespace dd::tar {
namespace {

// Field offsets and lengths of the ustar header (POSIX.1-1988).
constexpr size_t kNameOff = 0, kNameLen = 100;
constexpr size_t kModeOff = 100, kUidOff = 108, kGidOff = 116;
constexpr size_t kSizeOff = 124, kSizeLen = 12;
constexpr size_t kMtimeOff = 136;
constexpr size_t kChksumOff = 148, kChksumLen = 8;
constexpr size_t kTypeOff = 156;
constexpr size_t kMagicOff = 257;
constexpr size_t kVersionOff = 263;
constexpr size_t kUnameOff = 265, kGnameOff = 297;
constexpr size_t kPrefixOff = 345, kPrefixLen = 155;

void PutOctal(char* field, size_t len, uint64_t value) {
  // len-1 octal digits, then NUL.
  for (size_t i = len - 1; i-- > 0;) {
    field[i] = static_cast<char>('0' + (value & 7));
    value >>= 3;
  }
  field[len - 1] = '\0';
}

uint32_t HeaderChecksum(const char* header) {
  uint32_t sum = 0;
  for (size_t i = 0; i < kBlockSize; ++i) {
    bool in_chksum = i >= kChksumOff && i < kChksumOff + kChksumLen;
    sum += in_chksum ? ' ' : static_cast<unsigned char>(header[i]);
  }
  return sum;
}

absl::StatusOr<uint64_t> ParseNumeric(const char* field, size_t len, absl::string_view what) {
  // GNU base-256 for values that do not fit in octal.
  if (static_cast<unsigned char>(field[0]) & 0x80) {
    uint64_t v = static_cast<unsigned char>(field[0]) & 0x7f;
    for (size_t i = 1; i < len; ++i) {
      if (v >> 56) return absl::DataLossError(absl::StrCat("tar ", what, " overflows"));
      v = (v << 8) | static_cast<unsigned char>(field[i]);
    }
    return v;
  }
  uint64_t v = 0;
  size_t i = 0;
  while (i < len && (field[i] == ' ' || field[i] == '\0')) ++i;
  for (; i < len && field[i] >= '0' && field[i] <= '7'; ++i) {
    if (v >> 60) return absl::DataLossError(absl::StrCat("tar ", what, " overflows"));
    v = (v << 3) | static_cast<uint64_t>(field[i] - '0');
  }
  for (; i < len; ++i) {
    if (field[i] != ' ' && field[i] != '\0') {
      return absl::DataLossError(absl::StrCat("tar ", what, " field is not octal"));
    }
  }
  return v;
}

std::string CString(const char* field, size_t len) {
  return std::string(field, strnlen(field, len));
}

// Applies the "path" record of a pax extended header, if any.
absl::Status ParsePax(absl::string_view body, std::string* path) {
  while (!body.empty()) {
    size_t space = body.find(' ');
    uint64_t record_len = 0;
    if (space == absl::string_view::npos ||
        !absl::SimpleAtoi(body.substr(0, space), &record_len) ||
        record_len <= space + 1 || record_len > body.size()) {
      return absl::DataLossError("malformed pax extended header");
    }
    absl::string_view record = body.substr(space + 1, record_len - space - 1);
    if (!record.empty() && record.back() == '\n') record.remove_suffix(1);
    size_t eq = record.find('=');
    if (eq != absl::string_view::npos && record.substr(0, eq) == "path") {
      *path = std::string(record.substr(eq + 1));
    }
    body.remove_prefix(record_len);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> MakeFileHeader(absl::string_view name, uint64_t size) {
  if (name.empty() || name.size() > kMaxNameLength || name.front() == '/' ||
      absl::StrContains(name, "..")) {
    return absl::InvalidArgumentError(absl::StrCat("unusable tar member name \"", name, "\""));
  }
  std::string header(kBlockSize, '\0');
  char* h = header.data();
  std::memcpy(h + kNameOff, name.data(), name.size());
  PutOctal(h + kModeOff, 8, 0644);
  PutOctal(h + kUidOff, 8, 0);
  PutOctal(h + kGidOff, 8, 0);
  if (size >= (uint64_t{1} << 33)) {
    // base-256 for members of 8 GiB and more.
    char* f = h + kSizeOff;
    uint64_t v = size;
    for (size_t i = kSizeLen; i-- > 1;) {
      f[i] = static_cast<char>(v & 0xff);
      v >>= 8;
    }
    f[0] = static_cast<char>(0x80);
  } else {
    PutOctal(h + kSizeOff, kSizeLen, size);
  }
  PutOctal(h + kMtimeOff, 12, 0);
  h[kTypeOff] = '0';
  std::memcpy(h + kMagicOff, "ustar", 6);  // "ustar\0"
  std::memcpy(h + kVersionOff, "00", 2);
  std::memcpy(h + kUnameOff, "root", 4);
  std::memcpy(h + kGnameOff, "root", 4);
  uint32_t sum = HeaderChecksum(h);
  // Six octal digits, NUL, space: the form GNU tar writes.
  PutOctal(h + kChksumOff, 7, sum);
  h[kChksumOff + 7] = ' ';
  return header;
}

absl::StatusOr<ReadResult> ListEntries(const ReadAtFn& read_at, uint64_t archive_size) {
  ReadResult result;
  uint64_t pos = 0;
  std::string pending_name;  // from a pax 'x' or GNU 'L' header
  char header[kBlockSize];
  while (true) {
    if (pos + kBlockSize > archive_size) {
      return absl::DataLossError(absl::StrCat(
          "tar archive truncated: no end-of-archive marker before byte ", archive_size));
    }
    auto n = read_at(pos, kBlockSize, header);
    if (!n.ok()) return n.status();
    if (*n != kBlockSize) return absl::DataLossError("tar archive truncated inside a header");
    bool all_zero = true;
    for (char c : header) all_zero &= (c == 0);
    if (all_zero) break;  // End of archive (the second zero block is optional in practice).

    auto chksum = ParseNumeric(header + kChksumOff, kChksumLen, "checksum");
    if (!chksum.ok() || *chksum != HeaderChecksum(header)) {
      return absl::DataLossError(absl::StrCat("tar header checksum mismatch at byte ", pos));
    }
    auto size = ParseNumeric(header + kSizeOff, kSizeLen, "size");
    if (!size.ok()) return size.status();
    uint64_t data_offset = pos + kBlockSize;
    if (*size > archive_size || data_offset + *size > archive_size) {
      return absl::DataLossError(absl::StrCat(
          "tar member at byte ", pos, " runs past the end of the archive (truncated file?)"));
    }
    char type = header[kTypeOff];
    std::string name = CString(header + kNameOff, kNameLen);
    if (std::memcmp(header + kMagicOff, "ustar", 5) == 0) {
      std::string prefix = CString(header + kPrefixOff, kPrefixLen);
      if (!prefix.empty()) name = prefix + "/" + name;
    }
    if (type == 'x' || type == 'L') {
      result.used_extensions = true;
      if (*size > (1 << 20)) return absl::DataLossError("oversized tar extension header");
      std::string body(*size, '\0');
      auto got = read_at(data_offset, *size, body.data());
      if (!got.ok()) return got.status();
      if (*got != *size) return absl::DataLossError("tar extension header truncated");
      if (type == 'x') {
        absl::Status s = ParsePax(body, &pending_name);
        if (!s.ok()) return s;
      } else {
        pending_name = CString(body.data(), body.size());
      }
    } else if (type == 'g') {
      result.used_extensions = true;  // Global pax header: nothing we need.
    } else if (type == '0' || type == '\0' || type == '7') {
      if (!pending_name.empty()) name = std::move(pending_name);
      pending_name.clear();
      result.entries.push_back(Entry{name, data_offset, *size});
    } else {
      if (!pending_name.empty()) name = std::move(pending_name);
      pending_name.clear();
      result.skipped_members.push_back(name);
    }
    pos = data_offset + *size + PaddingFor(*size);
  }
  return result;
}

absl::StatusOr<ReadResult> ListFileEntries(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "cannot open", path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoToStatus(err, "cannot stat", path);
  }
  auto read_at = [fd, &path](uint64_t offset, size_t length,
                             char* out) -> absl::StatusOr<size_t> {
    size_t done = 0;
    while (done < length) {
      ssize_t n = ::pread(fd, out + done, length - done, offset + done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoToStatus(errno, "cannot read", path);
      if (n == 0) break;
      done += n;
    }
    return done;
  };
  auto result = ListEntries(read_at, st.st_size);
  ::close(fd);
  if (!result.ok()) {
    return absl::Status(result.status().code(),
                        absl::StrCat(path, ": ", result.status().message()));
  }
  return result;
}

}  // namespace dd::tar
