// ChunkStream: the data a trainer peer trains on, chunk by chunk. A
// background thread leases chunks from the coordinator and downloads them
// from the dataset service (resumable, SHA-256 verified) into a cache
// folder, keeping `prefetch` chunks ready while the current one trains (the
// prototype stopped training to download). It renews every held lease well
// before it expires. A chunk that fails verification or cannot be fetched is
// released back to the coordinator (so another peer or a later try gets it)
// and skipped. On Close, leases not completed are released.
#ifndef TRAINER_COLLAB_CHUNK_STREAM_H_
#define TRAINER_COLLAB_CHUNK_STREAM_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/dataset/dataset_client.h"
#include "trainer/collab/coordinator_client.h"

namespace dd::collab {

struct LocalChunk {
  uint64_t chunk_id = 0;
  uint64_t lease_id = 0;
  std::string path;  // a verified tar file
  uint32_t num_samples = 0;
};

struct ChunkStreamOptions {
  std::string cache_dir;
  int prefetch = 1;                        // chunks ready beyond the current one
  absl::Duration lease_timeout = absl::Minutes(20);  // from JoinResponse
  absl::Duration idle_retry = absl::Seconds(1);      // when no chunk is free
};

struct ChunkStreamStats {
  int64_t downloaded = 0;
  int64_t failed = 0;   // released after a failed download or verification
  int64_t retried = 0;  // downloaded, but only after more than one attempt
  int64_t completed = 0;
  uint64_t bytes = 0;
};

class ChunkStream {
 public:
  // `coordinator` and `dataset` must outlive the stream. Lists the dataset's
  // chunks first (Unavailable when the dataset service cannot be reached).
  static absl::StatusOr<std::unique_ptr<ChunkStream>> Start(CoordinatorClient* coordinator,
                                                            dataset::DatasetClient* dataset,
                                                            const ChunkStreamOptions& options);
  ~ChunkStream();  // Close()

  // The next downloaded chunk; waits up to `timeout` (DeadlineExceeded).
  absl::StatusOr<LocalChunk> Next(absl::Duration timeout);

  // Reports the chunk trained with `samples` samples and deletes the file.
  absl::Status Complete(const LocalChunk& chunk, uint32_t samples);

  // Stops the thread and releases every lease not completed.
  void Close();

  ChunkStreamStats stats() const;

 private:
  ChunkStream(CoordinatorClient* coordinator, dataset::DatasetClient* dataset,
              ChunkStreamOptions options);
  void Loop();
  void RenewHeld();

  CoordinatorClient* const coordinator_;
  dataset::DatasetClient* const dataset_;
  const ChunkStreamOptions options_;
  std::map<uint64_t, dataset::v1::ChunkInfo> chunks_;  // fixed after Start

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool closing_ = false;
  std::deque<LocalChunk> ready_;          // guarded by mu_
  std::map<uint64_t, uint64_t> held_;     // lease id -> chunk id, guarded by mu_
  ChunkStreamStats stats_;                // guarded by mu_
  std::thread thread_;
};

}  // namespace dd::collab

#endif  // TRAINER_COLLAB_CHUNK_STREAM_H_
