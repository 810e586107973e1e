#include "services/dataset/chunk_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/tar/tar_format.h"

namespace dd::dataset {

absl::StatusOr<std::vector<Segment>> BuildLayout(const Manifest& manifest, const Chunk& chunk) {
  std::vector<Segment> segments;
  uint64_t pos = 0;
  auto check_file = [&](uint32_t index) -> absl::Status {
    if (index >= static_cast<uint32_t>(manifest.files_size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk ", chunk.id(), " refers to unknown file ", index));
    }
    return absl::OkStatus();
  };
  if (chunk.whole_file()) {
    if (absl::Status s = check_file(chunk.whole_file_index()); !s.ok()) return s;
    uint64_t size = manifest.files(chunk.whole_file_index()).size();
    segments.push_back({Segment::kFileRange, 0, size, "", chunk.whole_file_index(), 0});
    return segments;
  }
  for (const auto& sample : chunk.samples()) {
    for (const auto& member : sample.members()) {
      if (absl::Status s = check_file(member.file_index()); !s.ok()) return s;
      auto header = tar::MakeFileHeader(absl::StrCat(sample.key(), ".", member.ext()),
                                        member.size());
      if (!header.ok()) return header.status();
      segments.push_back({Segment::kInline, pos, tar::kBlockSize, std::move(*header), 0, 0});
      pos += tar::kBlockSize;
      if (member.size() > 0) {
        segments.push_back(
            {Segment::kFileRange, pos, member.size(), "", member.file_index(), member.offset()});
        pos += member.size();
      }
      uint64_t pad = tar::PaddingFor(member.size());
      if (pad > 0) {
        segments.push_back({Segment::kZeros, pos, pad, "", 0, 0});
        pos += pad;
      }
    }
  }
  segments.push_back({Segment::kZeros, pos, tar::kTrailerSize, "", 0, 0});
  return segments;
}

absl::StatusOr<std::unique_ptr<ChunkReader>> ChunkReader::Open(const Manifest& manifest,
                                                               uint64_t chunk_id) {
  if (chunk_id >= static_cast<uint64_t>(manifest.chunks_size())) {
    return absl::NotFoundError(absl::StrCat("no chunk ", chunk_id, " (the dataset has ",
                                            manifest.chunks_size(), " chunks)"));
  }
  const Chunk& chunk = manifest.chunks(chunk_id);
  auto layout = BuildLayout(manifest, chunk);
  if (!layout.ok()) return layout.status();
  uint64_t size = layout->empty() ? 0 : layout->back().start + layout->back().length;
  if (size != chunk.size_bytes()) {
    return absl::InternalError(absl::StrCat("chunk ", chunk_id, " layout has ", size,
                                            " bytes, manifest says ", chunk.size_bytes()));
  }
  return std::unique_ptr<ChunkReader>(new ChunkReader(manifest, std::move(*layout), size));
}

ChunkReader::ChunkReader(const Manifest& manifest, std::vector<Segment> segments, uint64_t size)
    : manifest_(manifest), segments_(std::move(segments)), size_(size) {}

ChunkReader::~ChunkReader() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status ChunkReader::EnsureOpen(uint32_t file_index) {
  if (fd_ >= 0 && fd_index_ == file_index) return absl::OkStatus();
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  const auto& file = manifest_.files(file_index);
  // O_NOFOLLOW: read_path is canonical, so a symlink here means the file was
  // replaced after indexing; never follow it.
  int fd = ::open(file.read_path().c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    return absl::DataLossError(absl::StrCat(file.rel_path(), " is no longer readable (",
                                            std::strerror(errno), ") since indexing"));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<uint64_t>(st.st_size) != file.size() ||
      static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec !=
          file.mtime_ns()) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat(
        file.rel_path(), " changed since indexing (size or modification time differ)"));
  }
  fd_ = fd;
  fd_index_ = file_index;
  return absl::OkStatus();
}

absl::StatusOr<size_t> ChunkReader::ReadAt(uint64_t offset, char* out, size_t length) {
  if (offset > size_) {
    return absl::OutOfRangeError(
        absl::StrCat("offset ", offset, " is past the end of the chunk (", size_, " bytes)"));
  }
  length = static_cast<size_t>(std::min<uint64_t>(length, size_ - offset));
  // First segment whose end is past `offset`.
  auto it = std::upper_bound(segments_.begin(), segments_.end(), offset,
                             [](uint64_t pos, const Segment& s) { return pos < s.start + s.length; });
  size_t done = 0;
  for (; done < length && it != segments_.end(); ++it) {
    uint64_t in_segment = offset + done - it->start;
    size_t n = static_cast<size_t>(std::min<uint64_t>(length - done, it->length - in_segment));
    switch (it->kind) {
      case Segment::kInline:
        std::memcpy(out + done, it->bytes.data() + in_segment, n);
        break;
      case Segment::kZeros:
        std::memset(out + done, 0, n);
        break;
      case Segment::kFileRange: {
        if (absl::Status s = EnsureOpen(it->file_index); !s.ok()) return s;
        size_t got = 0;
        while (got < n) {
          ssize_t r = ::pread(fd_, out + done + got, n - got, it->file_offset + in_segment + got);
          if (r < 0 && errno == EINTR) continue;
          if (r <= 0) {
            return absl::DataLossError(absl::StrCat(manifest_.files(it->file_index).rel_path(),
                                                    " shrank or failed while being read"));
          }
          got += r;
        }
        break;
      }
    }
    done += n;
  }
  return done;
}

}  // namespace dd::dataset
