#include "services/dataset/dataset_service.h"

#include "common/rpc/auth.h"
#include "common/rpc/failed_stream.h"

#include <algorithm>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status/grpc_status.h"

namespace dd::dataset {

// One ReadChunk call. Life cycle: the constructor schedules the first read on
// the I/O pool; each finished read either writes a frame (StartWrite) or
// finishes the call; OnWriteDone schedules the next read. Exactly one of a
// read or a write is outstanding at any time, so no lock is needed between
// them; `cancelled_` is the only state shared with OnCancel.
class DatasetService::ReadChunkReactor : public grpc::ServerWriteReactor<v1::ChunkFrame> {
 public:
  ReadChunkReactor(DatasetService* service, grpc::CallbackServerContext* context,
                   std::unique_ptr<ChunkStream> stream, std::string client)
      : service_(service), context_(context), stream_(std::move(stream)), client_(std::move(client)) {
    {
      absl::MutexLock lock(&service_->reactors_mu_);
      service_->reactors_.insert(this);
    }
    ScheduleRead();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
      return;
    }
    last_progress_ms_.store(absl::ToUnixMillis(absl::Now()));
    ScheduleRead();
  }

  // Cancels the call when the client took no frame for `timeout` (called
  // by the watchdog under reactors_mu_, so the reactor is alive).
  bool CancelIfIdle(absl::Time now, absl::Duration timeout) {
    if (now - absl::FromUnixMillis(last_progress_ms_.load()) <= timeout || cancelled_.load()) return false;
    context_->TryCancel();
    return true;
  }

  void OnCancel() override { cancelled_.store(true); }

  void OnDone() override {
    {
      absl::MutexLock lock(&service_->reactors_mu_);
      service_->reactors_.erase(this);
    }
    service_->ReturnClientSlot(client_);
    service_->active_reads_.fetch_sub(1);
    delete this;
  }

 private:
  void ScheduleRead() {
    service_->io_pool_.Schedule([this] { ReadNext(); });
  }

  // Runs on the I/O pool. Must not touch members after StartWrite/Finish.
  void ReadNext() {
    if (cancelled_.load()) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
      return;
    }
    absl::Status s = stream_->Next(&frame_);
    if (!s.ok()) {
      LOG(WARNING) << "ReadChunk: " << s;
      Finish(ToGrpcStatus(s));
      return;
    }
    if (stream_->done()) {
      Finish(grpc::Status::OK);
      return;
    }
    service_->bytes_served_.fetch_add(frame_.data().size(), std::memory_order_relaxed);
    StartWrite(&frame_);
  }

  DatasetService* const service_;
  grpc::CallbackServerContext* const context_;
  const std::unique_ptr<ChunkStream> stream_;
  const std::string client_;  // whose stream slot this holds
  v1::ChunkFrame frame_;
  std::atomic<bool> cancelled_{false};
  std::atomic<int64_t> last_progress_ms_{absl::ToUnixMillis(absl::Now())};
};

DatasetService::DatasetService(const DatasetCatalog* catalog, DatasetServiceOptions options)
    : catalog_(catalog), options_(options), io_pool_(options.io_threads) {
  watchdog_ = std::thread([this] { WatchIdleStreams(); });
}

DatasetService::~DatasetService() {
  stop_watchdog_.Notify();
  watchdog_.join();
}

void DatasetService::WatchIdleStreams() {
  const absl::Duration period =
      std::max(absl::Milliseconds(100), std::min(absl::Seconds(1), options_.idle_timeout / 4));
  while (!stop_watchdog_.WaitForNotificationWithTimeout(period)) {
    const absl::Time now = absl::Now();
    absl::MutexLock lock(&reactors_mu_);
    for (ReadChunkReactor* r : reactors_) {
      if (r->CancelIfIdle(now, options_.idle_timeout)) {
        idle_cancelled_.fetch_add(1);
        LOG(WARNING) << "ReadChunk: a client took no frame for "
                     << absl::FormatDuration(options_.idle_timeout) << "; its stream is cancelled";
      }
    }
  }
}

grpc::ServerUnaryReactor* DatasetService::GetInfo(grpc::CallbackServerContext* context,
                                                  const v1::GetInfoRequest* /*request*/,
                                                  v1::DatasetInfo* response) {
  *response = catalog_->GetInfo();
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* DatasetService::ListChunks(grpc::CallbackServerContext* context,
                                                     const v1::ListChunksRequest* request,
                                                     v1::ListChunksResponse* response) {
  auto* reactor = context->DefaultReactor();
  auto page = catalog_->ListChunks(request->page_size(), request->page_token());
  if (!page.ok()) {
    reactor->Finish(ToGrpcStatus(page.status()));
    return reactor;
  }
  *response = std::move(*page);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<v1::ChunkFrame>* DatasetService::ReadChunk(
    grpc::CallbackServerContext* context, const v1::ReadChunkRequest* request) {
  // Data goes to the run token's holders and to peers; an invitation must
  // join first (so an evicted volunteer's reads end with its credential).
  const Caller caller = CallerOf(*context);
  if (caller.role == Caller::Role::kInvitation) {
    return new FailedStream<v1::ChunkFrame>(grpc::Status(
        grpc::StatusCode::PERMISSION_DENIED,
        "an invitation does not read the dataset: join the run and use the peer credential"));
  }
  auto stream = catalog_->OpenStream(request->chunk_id(), request->offset(),
                                     options_.frame_bytes);
  if (!stream.ok()) return new FailedStream<v1::ChunkFrame>(ToGrpcStatus(stream.status()));
  // A peer is counted by its credential, anyone else by its address.
  std::string client = caller.is_peer() ? "peer " + caller.peer_id : "ip " + caller.remote_ip;
  if (!TakeClientSlot(client)) {
    refused_busy_.fetch_add(1);
    return new FailedStream<v1::ChunkFrame>(grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("this client already holds ", options_.max_reads_per_client,
                     " chunk reads; finish one first")));
  }
  if (active_reads_.fetch_add(1) >= options_.max_concurrent_reads) {
    active_reads_.fetch_sub(1);
    ReturnClientSlot(client);
    refused_busy_.fetch_add(1);
    return new FailedStream<v1::ChunkFrame>(grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("more than ", options_.max_concurrent_reads,
                     " concurrent chunk reads; retry later")));
  }
  streams_.fetch_add(1);
  if (request->offset() > 0) resumed_.fetch_add(1);
  return new ReadChunkReactor(this, context, std::move(*stream), std::move(client));
}

DatasetService::ReadStats DatasetService::read_stats() const {
  ReadStats s;
  s.streams = streams_.load();
  s.resumed = resumed_.load();
  s.refused_busy = refused_busy_.load();
  s.bytes_served = bytes_served_.load();
  s.idle_cancelled = idle_cancelled_.load();
  return s;
}

bool DatasetService::TakeClientSlot(const std::string& client) {
  absl::MutexLock lock(&clients_mu_);
  int& held = reads_by_client_[client];
  if (held >= options_.max_reads_per_client) return false;
  ++held;
  return true;
}

void DatasetService::ReturnClientSlot(const std::string& client) {
  absl::MutexLock lock(&clients_mu_);
  auto it = reads_by_client_.find(client);
  if (it != reads_by_client_.end() && --it->second <= 0) reads_by_client_.erase(it);
}

}  // namespace dd::dataset
