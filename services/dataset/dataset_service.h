// DatasetService: the gRPC adapter of distdiff.dataset.v1.Dataset over a
// DatasetCatalog (callback API). Unary calls answer inline; ReadChunk's
// reactor never blocks a gRPC thread: each frame is read from disk on a
// small I/O thread pool, then written.
#ifndef SERVICES_DATASET_DATASET_SERVICE_H_
#define SERVICES_DATASET_DATASET_SERVICE_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/thread/thread_pool.h"
#include "protos/dataset.grpc.pb.h"
#include "services/dataset/catalog.h"

namespace dd::dataset {

struct DatasetServiceOptions {
  int io_threads = 4;
  // Streams beyond this answer RESOURCE_EXHAUSTED; each holds one frame
  // (1 MiB) in memory, so memory stays bounded whatever the chunk size.
  int max_concurrent_reads = 64;
  // Data bytes per ChunkFrame (tests use small frames to exercise resumes).
  size_t frame_bytes = kMaxFrameBytes;
  // Streams one client may hold at once (a peer, by its credential; else an
  // IP address): one token holder that opens streams and never reads them
  // cannot take every slot. Trainers hold one or two.
  int max_reads_per_client = 16;
  // A stream whose client has taken no frame for this long is cancelled
  // (its slots return): a reader that stalls holds nothing for good.
  absl::Duration idle_timeout = absl::Seconds(60);
};

class DatasetService final : public v1::Dataset::CallbackService {
 public:
  // `catalog` must outlive the service.
  DatasetService(const DatasetCatalog* catalog, DatasetServiceOptions options);
  ~DatasetService() override;

  grpc::ServerUnaryReactor* GetInfo(grpc::CallbackServerContext* context,
                                    const v1::GetInfoRequest* request,
                                    v1::DatasetInfo* response) override;
  grpc::ServerUnaryReactor* ListChunks(grpc::CallbackServerContext* context,
                                       const v1::ListChunksRequest* request,
                                       v1::ListChunksResponse* response) override;
  grpc::ServerWriteReactor<v1::ChunkFrame>* ReadChunk(
      grpc::CallbackServerContext* context, const v1::ReadChunkRequest* request) override;

  // Streams currently open (for tests and metrics).
  int active_reads() const { return active_reads_.load(); }

  // Totals since start, for the /metrics page.
  struct ReadStats {
    uint64_t streams = 0;          // ReadChunk streams accepted
    uint64_t resumed = 0;          // of them, resumed at an offset > 0
    uint64_t refused_busy = 0;     // refused: the service's or the client's slots full
    uint64_t bytes_served = 0;     // chunk data bytes sent
    uint64_t idle_cancelled = 0;   // streams cancelled after idle_timeout without progress
  };
  ReadStats read_stats() const;

 private:
  class ReadChunkReactor;

  // Cancels the streams idle for longer than idle_timeout, until stopped.
  void WatchIdleStreams();

  // Takes one of `client`'s stream slots; false when it holds them all.
  bool TakeClientSlot(const std::string& client) ABSL_LOCKS_EXCLUDED(clients_mu_);
  void ReturnClientSlot(const std::string& client) ABSL_LOCKS_EXCLUDED(clients_mu_);

  const DatasetCatalog* const catalog_;
  const DatasetServiceOptions options_;
  std::atomic<int> active_reads_{0};
  std::atomic<uint64_t> streams_{0};
  std::atomic<uint64_t> resumed_{0};
  std::atomic<uint64_t> refused_busy_{0};
  std::atomic<uint64_t> bytes_served_{0};
  std::atomic<uint64_t> idle_cancelled_{0};
  absl::Mutex clients_mu_;
  absl::flat_hash_map<std::string, int> reads_by_client_ ABSL_GUARDED_BY(clients_mu_);
  // Open streams, for the idle watchdog (a reactor leaves in OnDone, under
  // the lock, before it is deleted).
  absl::Mutex reactors_mu_;
  absl::flat_hash_set<ReadChunkReactor*> reactors_ ABSL_GUARDED_BY(reactors_mu_);
  absl::Notification stop_watchdog_;
  std::thread watchdog_;
  ThreadPool io_pool_;  // Last member: destroyed (drained) first.
};

}  // namespace dd::dataset

#endif  // SERVICES_DATASET_DATASET_SERVICE_H_
