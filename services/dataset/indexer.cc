#include "services/dataset/indexer.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <vector>

#include <glog/logging.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/crypto/sha256.h"
#include "common/io/file_util.h"
#include "common/progress/progress_line.h"
#include "common/tar/tar_format.h"
#include "services/dataset/chunk_reader.h"

namespace dd::dataset {
namespace fs = std::filesystem;
using internal::Member;
using internal::Sample;
using internal::SourceFile;
using distdiff::dataset::v1::SkippedFile;

namespace {

enum class Kind { kImage, kCaption, kJson, kShard, kOther };

std::string LowerExt(const std::string& name, bool first_dot) {
  size_t dot = first_dot ? name.find('.') : name.rfind('.');
  if (dot == std::string::npos) return "";
  return absl::AsciiStrToLower(name.substr(dot + 1));
}

bool IsImageExt(const std::string& ext) {
  return ext == "jpg" || ext == "jpeg" || ext == "png" || ext == "webp";
}

Kind KindOfExt(const std::string& ext) {
  if (IsImageExt(ext)) return Kind::kImage;
  if (ext == "txt") return Kind::kCaption;
  if (ext == "json") return Kind::kJson;
  if (ext == "tar") return Kind::kShard;
  return Kind::kOther;
}

int64_t MtimeNs(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

bool IsInside(const std::string& path, const std::string& root) {
  return path == root || absl::StartsWith(path, root + "/");
}

void Skip(internal::Manifest* m, std::string path, std::string reason) {
  SkippedFile* s = m->add_skipped();
  s->set_path(std::move(path));
  s->set_reason(std::move(reason));
}

// Walks the tree; fills manifest->files (sorted) and the walk's skips.
absl::Status Scan(const std::string& root, const std::string& exclude,
                  internal::Manifest* manifest) {
  std::error_code ec;
  fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec);
  if (ec) return absl::FailedPreconditionError(absl::StrCat("cannot list ", root, ": ", ec.message()));
  std::vector<SourceFile> files;
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) {
      return absl::FailedPreconditionError(absl::StrCat("walking ", root, ": ", ec.message()));
    }
    const fs::path& path = it->path();
    // Lexical: fs::relative would resolve symlinks and name their targets.
    std::string rel = path.lexically_relative(root).string();
    if (!exclude.empty() && IsInside(path.string(), exclude)) {
      it.disable_recursion_pending();
      continue;
    }
    fs::file_status link_status = it->symlink_status(ec);
    if (ec) continue;
    std::string read_path = path.string();
    if (fs::is_symlink(link_status)) {
      fs::path target = fs::canonical(path, ec);
      if (ec) {
        Skip(manifest, rel, "broken symbolic link");
        continue;
      }
      if (!IsInside(target.string(), root)) {
        Skip(manifest, rel, "symbolic link leads outside the dataset root");
        continue;
      }
      if (fs::is_directory(target, ec)) {
        Skip(manifest, rel, "symbolic link to a folder (not followed)");
        continue;
      }
      read_path = target.string();
    } else if (!fs::is_regular_file(link_status)) {
      continue;  // folders are recursed into; fifos, sockets, devices ignored
    }
    if (KindOfExt(LowerExt(path.filename().string(), false)) == Kind::kOther) continue;
    struct stat st;
    if (::stat(read_path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      Skip(manifest, rel, "cannot stat");
      continue;
    }
    SourceFile f;
    f.set_rel_path(rel);
    f.set_read_path(read_path);
    f.set_size(st.st_size);
    f.set_mtime_ns(MtimeNs(st));
    files.push_back(std::move(f));
  }
  std::sort(files.begin(), files.end(),
            [](const SourceFile& a, const SourceFile& b) { return a.rel_path() < b.rel_path(); });
  for (auto& f : files) *manifest->add_files() = std::move(f);
  return absl::OkStatus();
}

Member MakeMember(const std::string& ext, uint32_t file, uint64_t offset, uint64_t size) {
  Member m;
  m.set_ext(ext);
  m.set_file_index(file);
  m.set_offset(offset);
  m.set_size(size);
  return m;
}

// Loose image + caption pairs, grouped by folder and stem.
void CollectLoosePairs(internal::Manifest* manifest, std::vector<Sample>* samples) {
  struct Group {
    std::vector<uint32_t> images;
    int caption = -1;
    int json = -1;
  };
  std::map<std::string, Group> groups;
  for (int i = 0; i < manifest->files_size(); ++i) {
    const std::string& rel = manifest->files(i).rel_path();
    std::string ext = LowerExt(fs::path(rel).filename().string(), false);
    std::string stem = rel.substr(0, rel.size() - ext.size() - 1);
    switch (KindOfExt(ext)) {
      case Kind::kImage: groups[stem].images.push_back(i); break;
      case Kind::kCaption: groups[stem].caption = i; break;
      case Kind::kJson: groups[stem].json = i; break;
      default: break;
    }
  }
  for (const auto& [stem, g] : groups) {
    if (g.caption < 0) {
      for (uint32_t img : g.images) Skip(manifest, manifest->files(img).rel_path(), "no caption file");
      continue;
    }
    if (g.images.empty()) {
      Skip(manifest, manifest->files(g.caption).rel_path(), "caption without an image");
      continue;
    }
    for (uint32_t img : g.images) {
      const SourceFile& f = manifest->files(img);
      if (f.size() == 0) {
        Skip(manifest, f.rel_path(), "empty image file");
        continue;
      }
      Sample s;
      s.set_origin(f.rel_path());
      *s.add_members() = MakeMember(LowerExt(f.rel_path(), false), img, 0, f.size());
      const SourceFile& cap = manifest->files(g.caption);
      *s.add_members() = MakeMember("txt", g.caption, 0, cap.size());
      if (g.json >= 0) {
        *s.add_members() = MakeMember("json", g.json, 0, manifest->files(g.json).size());
      }
      samples->push_back(std::move(s));
    }
  }
}

// A WebDataset shard: whole-file chunk if canonical, else its complete
// samples go to `loose`.
void CollectShard(internal::Manifest* manifest, uint32_t index, std::vector<Sample>* loose) {
  const SourceFile& file = manifest->files(index);
  auto listing = tar::ListFileEntries(file.read_path());
  if (!listing.ok()) {
    Skip(manifest, file.rel_path(),
         absl::StrCat("unreadable WebDataset shard: ", listing.status().message()));
    return;
  }
  struct KeyGroup {
    std::vector<Member> images;
    std::vector<Member> captions;
    std::vector<Member> jsons;
    int other = 0;
  };
  std::vector<std::string> order;
  std::map<std::string, KeyGroup> keys;
  bool regular = !listing->used_extensions && listing->skipped_members.empty() &&
                 !listing->entries.empty();
  for (const auto& e : listing->entries) {
    size_t slash = e.name.rfind('/');
    std::string dir = slash == std::string::npos ? "" : e.name.substr(0, slash + 1);
    std::string base = e.name.substr(dir.size());
    size_t dot = base.find('.');
    if (dot == std::string::npos || dot == 0) {
      regular = false;
      continue;
    }
    std::string key = dir + base.substr(0, dot);
    std::string ext = absl::AsciiStrToLower(base.substr(dot + 1));
    if (order.empty() || order.back() != key) {
      if (keys.count(key)) regular = false;  // members of a key not adjacent
      order.push_back(key);
    }
    if (e.name.size() > tar::kMaxNameLength) regular = false;
    KeyGroup& g = keys[key];
    Member m = MakeMember(ext, index, e.data_offset, e.size);
    switch (KindOfExt(ext)) {
      case Kind::kImage: g.images.push_back(m); break;
      case Kind::kCaption: g.captions.push_back(m); break;
      case Kind::kJson: g.jsons.push_back(m); break;
      default: g.other++; break;
    }
  }
  std::vector<Sample> samples;
  int seen = 0;
  for (const std::string& key : order) {
    if (keys.count(key) == 0) continue;
    KeyGroup g = std::move(keys[key]);
    keys.erase(key);
    seen++;
    std::string where = absl::StrCat(file.rel_path(), "#", key);
    if (g.images.empty() || g.captions.empty()) {
      Skip(manifest, where, g.images.empty() ? "shard sample without an image" : "no caption file");
      regular = false;
      continue;
    }
    if (g.images.front().size() == 0) {
      Skip(manifest, where, "empty image file");
      regular = false;
      continue;
    }
    if (g.images.size() > 1 || g.captions.size() > 1 || g.jsons.size() > 1 || g.other > 0) {
      regular = false;
    }
    Sample s;
    s.set_key(key);
    s.set_origin(where);
    *s.add_members() = g.images.front();
    *s.add_members() = g.captions.front();
    if (!g.jsons.empty()) *s.add_members() = g.jsons.front();
    samples.push_back(std::move(s));
  }
  if (regular && !samples.empty()) {
    internal::Chunk* chunk = manifest->add_chunks();
    chunk->set_whole_file(true);
    chunk->set_whole_file_index(index);
    chunk->set_size_bytes(file.size());
    for (auto& s : samples) *chunk->add_samples() = std::move(s);
    return;
  }
  for (auto& s : samples) loose->push_back(std::move(s));
}

// Reads every chunk once: the chunk's SHA-256 and each member's.
absl::Status HashChunks(internal::Manifest* manifest) {
  uint64_t total_members = 0, total_bytes = 0;
  for (const auto& c : manifest->chunks()) {
    for (const auto& s : c.samples()) total_members += s.members_size();
    total_bytes += c.size_bytes();
  }
  ProgressLine progress("indexing", total_members, "files");
  uint64_t members_done = 0, bytes_done = 0;
  std::vector<char> buf(1 << 20);
  for (int ci = 0; ci < manifest->chunks_size(); ++ci) {
    internal::Chunk* chunk = manifest->mutable_chunks(ci);
    // Member data ranges in chunk coordinates, in increasing order.
    struct Span {
      uint64_t start, length;
      Member* member;
    };
    std::vector<Span> spans;
    uint64_t pos = 0;
    for (auto& s : *chunk->mutable_samples()) {
      for (auto& m : *s.mutable_members()) {
        if (chunk->whole_file()) {
          spans.push_back({m.offset(), m.size(), &m});
        } else {
          pos += tar::kBlockSize;
          spans.push_back({pos, m.size(), &m});
          pos += m.size() + tar::PaddingFor(m.size());
        }
      }
    }
    auto reader = ChunkReader::Open(*manifest, ci);
    if (!reader.ok()) return reader.status();
    Sha256 chunk_hash, member_hash;
    size_t next_span = 0;
    uint64_t offset = 0;
    while (offset < (*reader)->size()) {
      auto n = (*reader)->ReadAt(offset, buf.data(), buf.size());
      if (!n.ok()) {
        return absl::AbortedError(absl::StrCat("a file changed while indexing (",
                                               n.status().message(), "); run again"));
      }
      chunk_hash.Update(buf.data(), *n);
      uint64_t end = offset + *n;
      // Feed the overlapping parts to the member spans, finishing those done.
      while (next_span < spans.size()) {
        Span& sp = spans[next_span];
        uint64_t lo = std::max(offset, sp.start), hi = std::min(end, sp.start + sp.length);
        if (hi > lo) member_hash.Update(buf.data() + (lo - offset), hi - lo);
        if (sp.start + sp.length <= end) {
          Sha256Digest d = member_hash.Finish();
          sp.member->set_sha256(std::string(reinterpret_cast<const char*>(d.data()), d.size()));
          ++next_span;
          ++members_done;
          continue;
        }
        break;
      }
      offset = end;
      bytes_done += *n;
      progress.Update(members_done, bytes_done);
    }
    Sha256Digest d = chunk_hash.Finish();
    chunk->set_sha256(std::string(reinterpret_cast<const char*>(d.data()), d.size()));
  }
  progress.Finish();
  return absl::OkStatus();
}

void SetManifestHash(internal::Manifest* manifest) {
  Sha256 h;
  for (const auto& c : manifest->chunks()) {
    uint64_t fields[2] = {c.id(), c.size_bytes()};
    h.Update(fields, sizeof(fields));
    h.Update(c.sha256());
  }
  Sha256Digest d = h.Finish();
  manifest->set_manifest_sha256(std::string(reinterpret_cast<const char*>(d.data()), d.size()));
}

absl::StatusOr<std::string> CanonicalDir(const std::string& dir, const char* flag) {
  if (dir.empty()) return absl::InvalidArgumentError(absl::StrCat(flag, " is required"));
  std::error_code ec;
  fs::path p = fs::canonical(dir, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(flag, " ", dir, ": ", ec.message()));
  if (!fs::is_directory(p, ec)) {
    return absl::FailedPreconditionError(absl::StrCat(flag, " ", dir, " is not a folder"));
  }
  return p.string();
}

bool SameFiles(const internal::Manifest& a, const internal::Manifest& b) {
  if (a.files_size() != b.files_size()) return false;
  for (int i = 0; i < a.files_size(); ++i) {
    const auto& x = a.files(i);
    const auto& y = b.files(i);
    if (x.rel_path() != y.rel_path() || x.read_path() != y.read_path() || x.size() != y.size() ||
        x.mtime_ns() != y.mtime_ns()) {
      return false;
    }
  }
  return true;
}

absl::StatusOr<internal::Manifest> ScanOnly(const IndexOptions& options) {
  if (options.chunk_size == 0) return absl::InvalidArgumentError("--chunk_size must be >= 1");
  auto root = CanonicalDir(options.dataset_dir, "--dataset_dir");
  if (!root.ok()) return root.status();
  std::string exclude;
  if (!options.work_dir.empty()) {
    std::error_code ec;
    fs::path w = fs::weakly_canonical(options.work_dir, ec);
    if (!ec) exclude = w.string();
  }
  internal::Manifest manifest;
  manifest.set_format_version(kManifestFormatVersion);
  manifest.set_dataset_root(*root);
  manifest.set_chunk_size(options.chunk_size);
  if (absl::Status s = Scan(*root, exclude, &manifest); !s.ok()) return s;
  return manifest;
}

}  // namespace

std::string ManifestPath(const std::string& work_dir) { return work_dir + "/manifest.pb"; }

namespace {

// Turns a scan (files and the walk's skips) into chunks and hashes them.
absl::StatusOr<internal::Manifest> BuildFromScan(internal::Manifest manifest,
                                                 const IndexOptions& options) {
  std::vector<Sample> loose;
  for (int i = 0; i < manifest.files_size(); ++i) {
    if (KindOfExt(LowerExt(manifest.files(i).rel_path(), false)) == Kind::kShard) {
      CollectShard(&manifest, i, &loose);
    }
  }
  std::vector<Sample> pairs;
  CollectLoosePairs(&manifest, &pairs);
  // Loose pairs first (path order), then the repacked samples of shards.
  pairs.insert(pairs.end(), std::make_move_iterator(loose.begin()),
               std::make_move_iterator(loose.end()));
  uint64_t ordinal = 0;
  for (size_t i = 0; i < pairs.size(); i += options.chunk_size) {
    internal::Chunk* chunk = manifest.add_chunks();
    uint64_t size = tar::kTrailerSize;
    for (size_t j = i; j < std::min(pairs.size(), i + options.chunk_size); ++j) {
      Sample& s = pairs[j];
      s.set_key(absl::StrFormat("%09d", ordinal++));
      for (const auto& m : s.members()) size += tar::MemberSpan(m.size());
      *chunk->add_samples() = std::move(s);
    }
    chunk->set_size_bytes(size);
  }
  uint64_t samples = 0;
  for (int i = 0; i < manifest.chunks_size(); ++i) {
    manifest.mutable_chunks(i)->set_id(i);
    samples += manifest.chunks(i).samples_size();
  }
  manifest.set_num_samples(samples);
  if (absl::Status s = HashChunks(&manifest); !s.ok()) return s;
  SetManifestHash(&manifest);
  manifest.set_created_unix_ms(absl::ToUnixMillis(absl::Now()));
  return manifest;
}

}  // namespace

absl::StatusOr<internal::Manifest> BuildManifest(const IndexOptions& options) {
  auto scanned = ScanOnly(options);
  if (!scanned.ok()) return scanned.status();
  return BuildFromScan(std::move(*scanned), options);
}

absl::StatusOr<IndexResult> LoadOrBuildManifest(const IndexOptions& options) {
  IndexResult result;
  std::optional<internal::Manifest> fresh_scan;  // reused when rebuilding
  if (!options.work_dir.empty()) {
    std::error_code ec;
    fs::create_directories(options.work_dir, ec);
    if (ec) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot create --work_dir ", options.work_dir, ": ", ec.message()));
    }
    auto saved = ReadFileToString(ManifestPath(options.work_dir), uint64_t{16} << 30);
    if (saved.ok()) {
      internal::Manifest old;
      if (!old.ParseFromString(*saved)) {
        LOG(WARNING) << "saved manifest " << ManifestPath(options.work_dir)
                     << " is corrupt; re-indexing";
      } else {
        auto fresh = ScanOnly(options);
        if (!fresh.ok()) return fresh.status();
        if (old.format_version() == kManifestFormatVersion &&
            old.dataset_root() == fresh->dataset_root() &&
            old.chunk_size() == options.chunk_size && SameFiles(old, *fresh)) {
          result.manifest = std::move(old);
          result.reused = true;
          return result;
        }
        LOG(INFO) << "dataset files changed since the saved manifest; re-indexing";
        fresh_scan = std::move(*fresh);
      }
    }
  }
  // The tree is walked once: the scan made for the reuse check is rebuilt
  // from when it exists.
  auto built = fresh_scan.has_value() ? BuildFromScan(std::move(*fresh_scan), options)
                                      : BuildManifest(options);
  if (!built.ok()) return built.status();
  result.manifest = std::move(*built);
  if (!options.work_dir.empty()) {
    std::string bytes;
    result.manifest.SerializeToString(&bytes);
    if (absl::Status s = WriteFileAtomically(ManifestPath(options.work_dir), bytes); !s.ok()) {
      return s;
    }
  }
  return result;
}

}  // namespace dd::dataset
