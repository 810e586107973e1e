#include "services/dataset/catalog.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"

namespace dd::dataset {
namespace {

std::string Hex(const std::string& bytes) { return absl::BytesToHexString(bytes); }

Sha256Digest ToDigest(const std::string& bytes) {
  Sha256Digest d{};
  std::memcpy(d.data(), bytes.data(), std::min(bytes.size(), d.size()));
  return d;
}

}  // namespace

ChunkStream::ChunkStream(std::unique_ptr<ChunkReader> reader, uint64_t offset,
                         Sha256Digest expected, uint64_t chunk_id, size_t frame_bytes)
    : reader_(std::move(reader)),
      expected_(expected),
      chunk_id_(chunk_id),
      frame_bytes_(std::clamp<size_t>(frame_bytes, 1, kMaxFrameBytes)),
      start_(offset) {}

absl::Status ChunkStream::Next(v1::ChunkFrame* frame) {
  frame->Clear();
  frame->set_chunk_size(reader_->size());
  std::string* data = frame->mutable_data();
  // Bytes before the requested offset are hashed but not sent, so the whole
  // chunk is verified on every stream, resumed or not.
  while (hashed_ < start_) {
    data->resize(std::min<uint64_t>(kMaxFrameBytes, start_ - hashed_));  // not sent
    auto n = reader_->ReadAt(hashed_, data->data(), data->size());
    if (!n.ok()) return n.status();
    hash_.Update(data->data(), *n);
    hashed_ += *n;
  }
  frame->set_offset(hashed_);
  data->resize(frame_bytes_);
  auto n = reader_->ReadAt(hashed_, data->data(), data->size());
  if (!n.ok()) return n.status();
  data->resize(*n);
  hash_.Update(data->data(), *n);
  hashed_ += *n;
  if (*n == 0) {
    if (hash_.Finish() != expected_) {
      return absl::DataLossError(absl::StrCat(
          "chunk ", chunk_id_, " no longer matches its SHA-256 (a file changed since indexing; "
          "restart the server to re-index)"));
    }
    done_ = true;
  }
  return absl::OkStatus();
}

DatasetCatalog::DatasetCatalog(internal::Manifest manifest, CatalogMetadata metadata,
                               int64_t start_unix_ms)
    : manifest_(std::move(manifest)),
      metadata_(std::move(metadata)),
      start_unix_ms_(start_unix_ms),
      token_prefix_(Hex(manifest_.manifest_sha256()).substr(0, 12)) {}

v1::DatasetInfo DatasetCatalog::GetInfo() const {
  v1::DatasetInfo info;
  info.set_name(metadata_.name);
  info.set_description(metadata_.description);
  info.set_version(kServerVersion);
  info.set_num_samples(manifest_.num_samples());
  info.set_num_chunks(manifest_.chunks_size());
  info.set_chunk_size(manifest_.chunk_size());
  uint64_t total = 0;
  for (const auto& c : manifest_.chunks()) total += c.size_bytes();
  info.set_total_bytes(total);
  info.set_num_skipped_files(manifest_.skipped_size());
  for (int i = 0; i < manifest_.skipped_size() && i < 100; ++i) {
    *info.add_skipped_files() = manifest_.skipped(i);
  }
  info.set_start_time_unix_ms(start_unix_ms_);
  info.set_start_time(absl::FormatTime("%Y-%m-%dT%H:%M:%SZ",
                                       absl::FromUnixMillis(start_unix_ms_), absl::UTCTimeZone()));
  info.set_manifest_sha256_hex(Hex(manifest_.manifest_sha256()));
  return info;
}

absl::StatusOr<v1::ListChunksResponse> DatasetCatalog::ListChunks(
    uint32_t page_size, const std::string& page_token) const {
  if (page_size > kMaxPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size ", page_size, " is above the maximum ", kMaxPageSize));
  }
  if (page_size == 0) page_size = kDefaultPageSize;
  uint64_t start = 0;
  if (!page_token.empty()) {
    std::vector<std::string> parts = absl::StrSplit(page_token, ':');
    if (parts.size() != 2 || parts[0] != token_prefix_ || !absl::SimpleAtoi(parts[1], &start) ||
        start > static_cast<uint64_t>(manifest_.chunks_size())) {
      return absl::InvalidArgumentError("page_token was not issued by this server");
    }
  }
  v1::ListChunksResponse response;
  response.set_total_chunks(manifest_.chunks_size());
  uint64_t end = std::min<uint64_t>(start + page_size, manifest_.chunks_size());
  for (uint64_t i = start; i < end; ++i) {
    const internal::Chunk& c = manifest_.chunks(i);
    v1::ChunkInfo* info = response.add_chunks();
    info->set_chunk_id(c.id());
    info->set_num_samples(c.samples_size());
    info->set_size_bytes(c.size_bytes());
    info->set_sha256_hex(Hex(c.sha256()));
    info->set_source(c.whole_file()
                         ? absl::StrCat("shard:", manifest_.files(c.whole_file_index()).rel_path())
                         : "files");
  }
  if (end < static_cast<uint64_t>(manifest_.chunks_size())) {
    response.set_next_page_token(absl::StrCat(token_prefix_, ":", end));
  }
  return response;
}

absl::StatusOr<std::unique_ptr<ChunkStream>> DatasetCatalog::OpenStream(
    uint64_t chunk_id, uint64_t offset, size_t frame_bytes) const {
  auto reader = ChunkReader::Open(manifest_, chunk_id);
  if (!reader.ok()) return reader.status();
  if (offset > (*reader)->size()) {
    return absl::OutOfRangeError(absl::StrCat("offset ", offset, " is past the end of chunk ",
                                              chunk_id, " (", (*reader)->size(), " bytes)"));
  }
  return std::make_unique<ChunkStream>(std::move(*reader), offset,
                                       ToDigest(manifest_.chunks(chunk_id).sha256()), chunk_id,
                                       frame_bytes);
}

}  // namespace dd::dataset
