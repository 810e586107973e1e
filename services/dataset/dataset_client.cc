#include "services/dataset/dataset_client.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/crypto/sha256.h"
#include "common/io/file_util.h"
#include "common/rpc/channel.h"
#include "common/status/grpc_status.h"

namespace dd::dataset {
namespace {

bool IsTransient(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kInternal:
      return true;
    default:
      return false;
  }
}

// Appends `data` to fd at its end.
absl::Status WriteAll(int fd, const std::string& data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoToStatus(errno, "cannot write", path);
    done += n;
  }
  return absl::OkStatus();
}

}  // namespace

DatasetClient::DatasetClient(std::shared_ptr<grpc::Channel> channel)
    : stub_(v1::Dataset::NewStub(std::move(channel))) {}

absl::StatusOr<v1::DatasetInfo> DatasetClient::GetInfo(absl::Duration timeout) {
  auto context = MakeCallContext(timeout);
  v1::DatasetInfo info;
  grpc::Status s = stub_->GetInfo(context.get(), v1::GetInfoRequest(), &info);
  if (!s.ok()) return FromGrpcStatus(s, "GetInfo");
  return info;
}

absl::StatusOr<std::vector<v1::ChunkInfo>> DatasetClient::ListAllChunks(absl::Duration timeout) {
  std::vector<v1::ChunkInfo> chunks;
  std::string token;
  do {
    auto context = MakeCallContext(timeout);
    v1::ListChunksRequest request;
    request.set_page_token(token);
    v1::ListChunksResponse response;
    grpc::Status s = stub_->ListChunks(context.get(), request, &response);
    if (!s.ok()) return FromGrpcStatus(s, "ListChunks");
    for (auto& c : *response.mutable_chunks()) chunks.push_back(std::move(c));
    token = response.next_page_token();
  } while (!token.empty());
  return chunks;
}

absl::StatusOr<DownloadResult> DatasetClient::DownloadChunk(const v1::ChunkInfo& chunk,
                                                            const std::string& path,
                                                            const DownloadOptions& options) {
  auto expected = DigestFromHex(chunk.sha256_hex());
  if (!expected.ok()) return expected.status();
  const std::string partial = path + ".partial";
  int fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoToStatus(errno, "cannot open", partial);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoToStatus(err, "cannot stat", partial);
  }
  uint64_t have = st.st_size;
  DownloadResult result;
  if (have > chunk.size_bytes()) {
    // Longer than the chunk: not a prefix of it. Start over.
    if (::ftruncate(fd, 0) != 0) {
      int err = errno;
      ::close(fd);
      return ErrnoToStatus(err, "cannot truncate", partial);
    }
    have = 0;
  }
  result.resumed = have > 0;
  absl::Duration backoff = options.initial_backoff;
  absl::Status last;
  while (have < chunk.size_bytes()) {
    if (result.attempts >= options.max_attempts) {
      ::close(fd);
      return absl::UnavailableError(absl::StrCat("chunk ", chunk.chunk_id(), ": gave up after ",
                                                 result.attempts, " attempts; last error: ",
                                                 last.message()));
    }
    if (result.attempts > 0) {
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, options.max_backoff);
    }
    ++result.attempts;
    auto context = MakeCallContext(options.attempt_timeout);
    v1::ReadChunkRequest request;
    request.set_chunk_id(chunk.chunk_id());
    request.set_offset(have);
    auto reader = stub_->ReadChunk(context.get(), request);
    v1::ChunkFrame frame;
    uint64_t this_attempt = 0;
    absl::Status frame_error;
    bool interrupted = false;
    while (reader->Read(&frame)) {
      if (frame.offset() != have || frame.chunk_size() != chunk.size_bytes() ||
          frame.data().size() > chunk.size_bytes() - have) {
        frame_error = absl::InternalError(
            absl::StrCat("chunk ", chunk.chunk_id(), ": frame at offset ", frame.offset(),
                         " does not continue the ", have, " bytes held"));
        break;
      }
      if (absl::Status s = WriteAll(fd, frame.data(), partial); !s.ok()) {
        context->TryCancel();
        reader->Finish();
        ::close(fd);
        return s;
      }
      have += frame.data().size();
      this_attempt += frame.data().size();
      result.bytes_received += frame.data().size();
      if (options.on_progress) options.on_progress(have, chunk.size_bytes());
      if (options.interrupt_after_bytes > 0 && this_attempt >= options.interrupt_after_bytes &&
          have < chunk.size_bytes()) {
        interrupted = true;
        break;
      }
    }
    if (!frame_error.ok() || interrupted) context->TryCancel();
    grpc::Status status = reader->Finish();
    if (!frame_error.ok()) {
      last = frame_error;
      continue;
    }
    if (interrupted) {
      last = absl::CancelledError("interrupted (test hook)");
      continue;
    }
    if (!status.ok()) {
      last = FromGrpcStatus(status, absl::StrCat("ReadChunk ", chunk.chunk_id()));
      if (!IsTransient(last.code())) {
        ::close(fd);
        return last;
      }
      LOG(INFO) << last << "; resuming from byte " << have;
      continue;
    }
    if (have < chunk.size_bytes()) {
      last = absl::InternalError("stream ended early");
      continue;
    }
  }
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoToStatus(err, "cannot fsync", partial);
  }
  ::close(fd);
  auto digest = Sha256OfFile(partial);
  if (!digest.ok()) return digest.status();
  if (*digest != *expected) {
    ::unlink(partial.c_str());
    return absl::DataLossError(absl::StrCat("chunk ", chunk.chunk_id(), " downloaded with SHA-256 ",
                                            DigestToHex(*digest), ", expected ",
                                            chunk.sha256_hex(), "; partial file removed"));
  }
  if (::rename(partial.c_str(), path.c_str()) != 0) {
    return ErrnoToStatus(errno, "cannot rename onto", path);
  }
  return result;
}

}  // namespace dd::dataset
