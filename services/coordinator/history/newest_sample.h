// NewestSample: the newest sample grid of the run, which the run's
// designated writer uploads (UploadSample) and the status page shows.
//
// Uploads come from peers, and browsers display what is kept, so nothing a
// peer sent is served as is: the PNG is decoded under size and pixel caps
// (image_decoder, strict) and re-encoded here. The newest grid is kept in
// memory and written beside the ledger (atomically), so a restarted
// coordinator shows it again. Pure logic: no gRPC types.
#ifndef SERVICES_COORDINATOR_HISTORY_NEWEST_SAMPLE_H_
#define SERVICES_COORDINATOR_HISTORY_NEWEST_SAMPLE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace dd::coordinator {

inline constexpr size_t kMaxSamplePngBytes = size_t{4} << 20;
inline constexpr int64_t kMaxSamplePixels = int64_t{4} << 20;

struct SampleGrid {
  uint64_t step = 0;
  std::string peer_id;  // who drew it
  int64_t unix_ms = 0;  // when it arrived
  int width = 0;
  int height = 0;
  std::string png;  // our own encoding
};

class NewestSample {
 public:
  // Keeps the grid in `dir` (newest_sample.png and newest_sample.meta) and
  // loads what a previous run left there; a missing or unreadable pair is
  // no grid (logged), not an error. Empty `dir`: memory only.
  static std::unique_ptr<NewestSample> Open(std::string dir);

  // Keeps `png` as the grid of `step` when the step is newer than the one
  // kept; returns whether it did. InvalidArgument for a PNG above
  // kMaxSamplePngBytes or kMaxSamplePixels or one that does not decode;
  // the write's error when it could not be stored (the old grid stays).
  absl::StatusOr<bool> Offer(uint64_t step, const std::string& peer_id, absl::string_view png,
                             absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);

  // The grid kept; null when there is none.
  std::shared_ptr<const SampleGrid> Get() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  explicit NewestSample(std::string dir) : dir_(std::move(dir)) {}

  // Fixed after construction.
  const std::string dir_;

  mutable absl::Mutex mu_;
  std::shared_ptr<const SampleGrid> grid_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dd::coordinator

#endif  // SERVICES_COORDINATOR_HISTORY_NEWEST_SAMPLE_H_
