// DatasetClient: what trainers and the CLI use to talk to a dataset server.
// Downloads resume after interruptions and are verified against the
// manifest's SHA-256 before they appear under their final name.
#ifndef SERVICES_DATASET_DATASET_CLIENT_H_
#define SERVICES_DATASET_DATASET_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/channel.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "protos/dataset.grpc.pb.h"

namespace dd::dataset {

namespace v1 = ::distdiff::dataset::v1;

struct DownloadOptions {
  // Attempts per chunk; only transient errors (UNAVAILABLE, DEADLINE_EXCEEDED,
  // RESOURCE_EXHAUSTED, ABORTED, CANCELLED, INTERNAL) are retried.
  int max_attempts = 10;
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(10);
  // Deadline of one attempt's stream.
  absl::Duration attempt_timeout = absl::Minutes(30);
  // Test and benchmark hook: end each attempt after this many bytes
  // (0 = never), as a dropped connection would.
  uint64_t interrupt_after_bytes = 0;
  // Called after each frame with (bytes held, chunk size).
  std::function<void(uint64_t, uint64_t)> on_progress;
};

struct DownloadResult {
  uint64_t bytes_received = 0;  // over the network, all attempts
  int attempts = 0;
  bool resumed = false;  // continued a partial file left by an earlier run
};

class DatasetClient {
 public:
  explicit DatasetClient(std::shared_ptr<grpc::Channel> channel);

  absl::StatusOr<v1::DatasetInfo> GetInfo(absl::Duration timeout = absl::Seconds(30));

  // Every chunk of the manifest, following page tokens.
  absl::StatusOr<std::vector<v1::ChunkInfo>> ListAllChunks(
      absl::Duration timeout = absl::Seconds(30));

  // Downloads `chunk` to `path`. Bytes are appended to `path + ".partial"`;
  // a partial file from an interrupted attempt or an earlier run is
  // continued from its length. When complete the file is hashed; on a match
  // it is renamed to `path`, otherwise deleted and DataLoss is returned. A
  // non-transient server error (NOT_FOUND, DATA_LOSS, UNAUTHENTICATED, ...)
  // is returned at once with the server's message.
  absl::StatusOr<DownloadResult> DownloadChunk(const v1::ChunkInfo& chunk, const std::string& path,
                                               const DownloadOptions& options = {});

 private:
  std::unique_ptr<v1::Dataset::Stub> stub_;
};

}  // namespace dd::dataset

#endif  // SERVICES_DATASET_DATASET_CLIENT_H_
