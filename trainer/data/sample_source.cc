#include "trainer/data/sample_source.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/io/file_util.h"
#include "common/tar/tar_format.h"

namespace dd::data {
namespace {

namespace fs = std::filesystem;

bool IsImageExtension(absl::string_view ext) {
  std::string e = absl::AsciiStrToLower(ext);
  return e == ".jpg" || e == ".jpeg" || e == ".png" || e == ".webp";
}

bool IsCaptionExtension(absl::string_view ext) { return absl::AsciiStrToLower(ext) == ".txt"; }

struct Parts {
  bool has_image = false;
  FileRange image;
  bool has_caption = false;
  FileRange caption;
};

void AddNote(SourceListing* listing, std::string note) {
  if (listing->notes.size() < 20) listing->notes.push_back(std::move(note));
}

// WebDataset keys: the member path up to the first dot of its file name.
void SplitWebDatasetName(const std::string& name, std::string* key, std::string* ext) {
  size_t slash = name.rfind('/');
  size_t dot = name.find('.', slash == std::string::npos ? 0 : slash + 1);
  if (dot == std::string::npos) {
    *key = name;
    ext->clear();
    return;
  }
  *key = name.substr(0, dot);
  *ext = name.substr(name.rfind('.'));
}

void AddTar(const std::string& path, const std::string& key_prefix,
            std::map<std::string, Parts>* parts, SourceListing* listing) {
  auto entries = tar::ListFileEntries(path);
  if (!entries.ok()) {
    ++listing->skipped_files;
    AddNote(listing, absl::StrCat(path, ": ", entries.status().message()));
    return;
  }
  for (const tar::Entry& e : entries->entries) {
    std::string key, ext;
    SplitWebDatasetName(e.name, &key, &ext);
    FileRange range{path, e.data_offset, e.size};
    Parts& p = (*parts)[absl::StrCat(key_prefix, ":", key)];
    if (IsImageExtension(ext) && !p.has_image) {
      p.has_image = true;
      p.image = range;
    } else if (IsCaptionExtension(ext)) {
      p.has_caption = true;
      p.caption = range;
    }
  }
}

}  // namespace

absl::StatusOr<SourceListing> ListSamples(const std::string& path) {
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) return absl::NotFoundError(absl::StrCat("no dataset at ", path));
  SourceListing listing;
  std::map<std::string, Parts> parts;
  if (fs::is_regular_file(st)) {
    AddTar(path, fs::path(path).filename().string(), &parts, &listing);
  } else {
    fs::recursive_directory_iterator it(path, fs::directory_options::skip_permission_denied, ec);
    if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot list ", path, ": ", ec.message()));
    for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) break;
      if (!it->is_regular_file(ec)) continue;
      const fs::path& p = it->path();
      std::string rel = fs::relative(p, path, ec).string();
      std::string ext = p.extension().string();
      if (absl::AsciiStrToLower(ext) == ".tar") {
        AddTar(p.string(), rel, &parts, &listing);
        continue;
      }
      bool image = IsImageExtension(ext), caption = IsCaptionExtension(ext);
      if (!image && !caption) continue;
      std::string key = rel.substr(0, rel.size() - ext.size());
      FileRange range{p.string(), 0, static_cast<uint64_t>(it->file_size(ec))};
      Parts& part = parts[key];
      if (image && !part.has_image) {
        part.has_image = true;
        part.image = range;
      } else if (caption) {
        part.has_caption = true;
        part.caption = range;
      }
    }
    if (ec) return absl::InternalError(absl::StrCat("listing ", path, ": ", ec.message()));
  }
  for (auto& [key, p] : parts) {
    if (!p.has_image) {
      ++listing.skipped_files;
      AddNote(&listing, absl::StrCat(key, ": no image (only caption or other members)"));
      continue;
    }
    SampleRef ref;
    ref.key = key;
    ref.image = p.image;
    ref.has_caption = p.has_caption;
    ref.caption = p.caption;
    if (!p.has_caption) ++listing.without_caption;
    listing.samples.push_back(std::move(ref));
  }
  if (listing.samples.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no images (.jpg .jpeg .png .webp, alone or in .tar shards) under ", path));
  }
  return listing;
}

absl::StatusOr<std::string> ReadRange(const FileRange& range, uint64_t max_bytes) {
  if (range.size > max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(range.path, ": ", range.size,
                                                     " bytes is more than the limit of ", max_bytes));
  }
  int fd = ::open(range.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "open", range.path);
  std::string out(range.size, '\0');
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::pread(fd, out.data() + done, out.size() - done, range.offset + done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      if (n == 0) {
        return absl::DataLossError(absl::StrCat(range.path, " is shorter than its listing (",
                                                range.offset + done, " < ",
                                                range.offset + range.size, ")"));
      }
      return ErrnoToStatus(err, "read", range.path);
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return out;
}

std::string CleanCaption(const std::string& raw) {
  std::string out;
  out.reserve(raw.size());
  const auto* s = reinterpret_cast<const unsigned char*>(raw.data());
  size_t i = 0, n = raw.size();
  while (i < n) {
    unsigned char c = s[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool valid = len > 0 && i + len <= n;
    for (size_t k = 1; valid && k < len; ++k) valid = (s[i + k] & 0xC0) == 0x80;
    if (valid && len > 1) {
      // Reject overlong forms, surrogates and code points past U+10FFFF.
      uint32_t cp = len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
      for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (s[i + k] & 0x3F);
      valid = !(len == 2 && cp < 0x80) && !(len == 3 && cp < 0x800) && !(len == 4 && cp < 0x10000) &&
              !(cp >= 0xD800 && cp <= 0xDFFF) && cp <= 0x10FFFF;
    }
    if (!valid) {
      out += "\xEF\xBF\xBD";
      ++i;
      continue;
    }
    if (c == 0) {
      out += ' ';  // a NUL would end the caption for C string consumers
    } else {
      out.append(reinterpret_cast<const char*>(s + i), len);
    }
    i += len;
  }
  return std::string(absl::StripAsciiWhitespace(out));
}

}  // namespace dd::data
