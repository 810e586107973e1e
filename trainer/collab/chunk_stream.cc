#include "trainer/collab/chunk_stream.h"

#include <filesystem>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace dd::collab {

ChunkStream::ChunkStream(CoordinatorClient* coordinator, dataset::DatasetClient* dataset,
                         ChunkStreamOptions options)
    : coordinator_(coordinator), dataset_(dataset), options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<ChunkStream>> ChunkStream::Start(CoordinatorClient* coordinator,
                                                                dataset::DatasetClient* dataset,
                                                                const ChunkStreamOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(options.cache_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("chunk cache ", options.cache_dir, " cannot be created: ", ec.message()));
  }
  std::unique_ptr<ChunkStream> s(new ChunkStream(coordinator, dataset, options));
  auto chunks = dataset->ListAllChunks();
  if (!chunks.ok()) {
    return absl::UnavailableError(absl::StrCat("listing the dataset's chunks: ", chunks.status().message()));
  }
  for (const auto& c : *chunks) s->chunks_[c.chunk_id()] = c;
  s->thread_ = std::thread([p = s.get()] { p->Loop(); });
  return s;
}

ChunkStream::~ChunkStream() { Close(); }

void ChunkStream::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closing_ && !thread_.joinable()) return;
    closing_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::vector<uint64_t> leases;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [lease, chunk] : held_) leases.push_back(lease);
    held_.clear();
    for (const auto& c : ready_) std::filesystem::remove(c.path);
    ready_.clear();
  }
  if (absl::Status s = coordinator_->Release(leases); !s.ok()) {
    LOG(WARNING) << "releasing " << leases.size() << " leases: " << s;
  }
}

ChunkStreamStats ChunkStream::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void ChunkStream::RenewHeld() {
  std::vector<uint64_t> ids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [lease, chunk] : held_) ids.push_back(lease);
  }
  if (ids.empty()) return;
  std::vector<uint64_t> lost;
  auto renewed = coordinator_->Renew(ids, &lost);
  if (!renewed.ok()) {
    LOG(WARNING) << "renewing leases: " << renewed.status();
    return;
  }
  if (!lost.empty()) {
    LOG(WARNING) << lost.size() << " lease(s) were lost (expired or evicted); their chunks may "
                 << "be trained again by another peer";
  }
}

void ChunkStream::Loop() {
  absl::Time last_renew = absl::Now();
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(200), [&] {
        return closing_ || static_cast<int>(ready_.size()) <= options_.prefetch;
      });
      if (closing_) return;
    }
    if (absl::Now() - last_renew > options_.lease_timeout / 3) {
      RenewHeld();
      last_renew = absl::Now();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (static_cast<int>(ready_.size()) > options_.prefetch) continue;
    }
    auto leases = coordinator_->Acquire(1);
    if (!leases.ok() || leases->empty()) {
      if (!leases.ok()) LOG(WARNING) << "acquiring a chunk: " << leases.status();
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, absl::ToChronoMilliseconds(options_.idle_retry), [&] { return closing_; });
      continue;
    }
    const cv1::Lease& lease = leases->front();
    {
      std::lock_guard<std::mutex> lock(mu_);
      held_[lease.lease_id()] = lease.chunk_id();
    }
    auto info = chunks_.find(lease.chunk_id());
    absl::Status status;
    std::string path = absl::StrFormat("%s/chunk-%06d.tar", options_.cache_dir, lease.chunk_id());
    if (info == chunks_.end()) {
      status = absl::NotFoundError(absl::StrCat("chunk ", lease.chunk_id(), " is not in the dataset's manifest"));
    } else {
      auto result = dataset_->DownloadChunk(info->second, path);
      status = result.status();
      if (result.ok()) {
        if (result->attempts > 1) {
          // The dataset service dropped or restarted; the client resumed.
          LOG(INFO) << "chunk " << lease.chunk_id() << " downloaded after " << result->attempts
                    << " attempts";
        }
        std::lock_guard<std::mutex> lock(mu_);
        stats_.bytes += result->bytes_received;
        stats_.retried += result->attempts > 1;
      }
    }
    if (!status.ok()) {
      // Checksum mismatch or a dead dataset service: give the chunk back.
      LOG(WARNING) << "chunk " << lease.chunk_id() << " skipped: " << status;
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.failed;
        held_.erase(lease.lease_id());
      }
      (void)coordinator_->Release({lease.lease_id()});
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, absl::ToChronoMilliseconds(options_.idle_retry), [&] { return closing_; });
      continue;
    }
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.downloaded;
    ready_.push_back({lease.chunk_id(), lease.lease_id(), path, lease.num_samples()});
    cv_.notify_all();
  }
}

absl::StatusOr<LocalChunk> ChunkStream::Next(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, absl::ToChronoMilliseconds(timeout), [&] { return closing_ || !ready_.empty(); })) {
    return absl::DeadlineExceededError("no chunk downloaded in time (all leased, or the dataset "
                                       "service is down)");
  }
  if (ready_.empty()) return absl::CancelledError("chunk stream closed");
  LocalChunk c = ready_.front();
  ready_.pop_front();
  cv_.notify_all();
  return c;
}

absl::Status ChunkStream::Complete(const LocalChunk& chunk, uint32_t samples) {
  auto r = coordinator_->Complete(chunk.chunk_id, chunk.lease_id, samples);
  {
    std::lock_guard<std::mutex> lock(mu_);
    held_.erase(chunk.lease_id);
    if (r.ok()) ++stats_.completed;
  }
  std::error_code ec;
  std::filesystem::remove(chunk.path, ec);
  return r.status();
}

}  // namespace dd::collab
