// DataLoader: batches of decoded, bucketed, augmented images and captions,
// made on background threads ahead of the trainer.
//
// Pipeline: an epoch's sample order is a seeded permutation; worker threads
// read, decode and crop samples in parallel; results are put back in order
// and grouped by bucket, and a batch is emitted when its bucket has
// batch_size samples (at the end of an epoch partly filled buckets are
// emitted as smaller batches). Everything random (order, crop position, flip,
// caption dropout, tag order) is drawn from (seed, sample sequence number),
// so the batches are the same whatever the thread timing, and a run resumed
// from a DataPosition continues with exactly the batches it would have seen.
//
// Memory is bounded: at most `prefetch_batches` batches wait in the queue and
// workers run at most prefetch_batches * batch_size samples ahead; partly
// filled buckets hold uint8 images only.
//
// A sample that cannot be read or decoded is skipped and counted in stats();
// it never stops the run. Thread-safe: Next() may be called from any one
// thread at a time.
#ifndef TRAINER_DATA_DATA_LOADER_H_
#define TRAINER_DATA_DATA_LOADER_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/data/buckets.h"
#include "trainer/data/captions.h"
#include "common/image/image_decoder.h"
#include "trainer/data/sample_source.h"

namespace dd::data {

struct LoaderOptions {
  int batch_size = 1;
  BucketOptions buckets;  // square_only for plain resize-and-crop
  bool random_crop = false;
  bool random_flip = false;
  CaptionOptions captions;
  uint64_t seed = 0;
  bool shuffle = true;
  int64_t max_epochs = 0;  // 0: repeat forever
  int num_workers = 2;
  int prefetch_batches = 4;
  DecodeOptions decode;
};

// Where a loader stands, for exact resume: the next sequence number to read
// and the samples waiting in partly filled buckets.
struct DataPosition {
  uint64_t next = 0;
  std::vector<uint64_t> pending;

  std::string Serialize() const;
  // InvalidArgument for malformed text.
  static absl::StatusOr<DataPosition> Parse(const std::string& text);
  bool operator==(const DataPosition& o) const { return next == o.next && pending == o.pending; }
};

struct Batch {
  at::Tensor pixels;  // float32 [B, 3, H, W] in [-1, 1]
  std::vector<std::string> captions;
  std::vector<std::string> keys;
  at::Tensor original_sizes;  // int64 [B, 2]: height, width (after EXIF)
  at::Tensor crop_top_left;   // int64 [B, 2]
  int64_t epoch = 0;          // of the last sample in the batch
  DataPosition position;      // after this batch: resume from here
};

struct LoaderStats {
  int64_t samples = 0;  // decoded and batched
  int64_t skipped = 0;  // unreadable or undecodable
  int64_t batches = 0;
  std::vector<std::string> skip_notes;  // the first 20 reasons
};

class DataLoader {
 public:
  // Starts the workers at `start`. InvalidArgument for bad options or an
  // empty sample list.
  static absl::StatusOr<std::unique_ptr<DataLoader>> Start(std::vector<SampleRef> samples,
                                                           const LoaderOptions& options,
                                                           const DataPosition& start = {});
  ~DataLoader();  // stops and joins the workers

  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The next batch; nullopt after the last epoch. FailedPrecondition when a
  // whole epoch had no decodable sample.
  absl::StatusOr<std::optional<Batch>> Next();

  LoaderStats stats() const;
  size_t num_samples() const;

  struct State;

 private:
  explicit DataLoader(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace dd::data

#endif  // TRAINER_DATA_DATA_LOADER_H_
