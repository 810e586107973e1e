#include "trainer/data/data_loader.h"

#include <condition_variable>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "trainer/data/image_resize.h"

namespace dd::data {
namespace {

// One sample after the worker is done with it.
struct Processed {
  uint64_t seq = 0;
  bool ok = false;
  std::string error;
  int bucket = 0;
  at::Tensor pixels;  // uint8 [3, H, W]
  std::string caption;
  std::string key;
  int height = 0, width = 0;
  int crop_top = 0, crop_left = 0;
};

struct ReadyBatch {
  std::vector<Processed> samples;
  DataPosition position;
  int64_t epoch = 0;
};

// Random streams drawn per sample; distinct so adding one does not move another.
constexpr uint64_t kShuffleStream = 0xA11CE;

}  // namespace

std::string DataPosition::Serialize() const {
  return absl::StrCat("next=", next, ";pending=", absl::StrJoin(pending, ","));
}

absl::StatusOr<DataPosition> DataPosition::Parse(const std::string& text) {
  DataPosition p;
  std::vector<std::string> parts = absl::StrSplit(text, ';');
  if (parts.size() != 2 || !absl::StartsWith(parts[0], "next=") ||
      !absl::StartsWith(parts[1], "pending=") ||
      !absl::SimpleAtoi(absl::string_view(parts[0]).substr(5), &p.next)) {
    return absl::InvalidArgumentError(absl::StrCat("malformed data position \"", text, "\""));
  }
  absl::string_view pending = absl::string_view(parts[1]).substr(8);
  if (!pending.empty()) {
    for (absl::string_view s : absl::StrSplit(pending, ',')) {
      uint64_t v = 0;
      if (!absl::SimpleAtoi(s, &v) || v >= p.next) {
        return absl::InvalidArgumentError(absl::StrCat("malformed data position \"", text, "\""));
      }
      p.pending.push_back(v);
    }
  }
  return p;
}

struct DataLoader::State {
  // Fixed after construction.
  std::vector<SampleRef> samples;
  LoaderOptions options;
  BucketSet buckets;
  std::vector<uint64_t> replay;  // pending samples of the start position
  uint64_t start = 0;
  uint64_t end_seq = std::numeric_limits<uint64_t>::max();
  size_t window = 0;

  std::mutex mu;
  std::condition_variable work_cv;   // workers wait for room
  std::condition_variable ready_cv;  // Next() waits for a batch
  // Guarded by mu.
  bool stop = false;
  absl::Status error;
  uint64_t claim = 0;     // next item a worker takes
  uint64_t assemble = 0;  // next item the bucketer takes
  std::map<uint64_t, Processed> done;
  std::vector<std::vector<Processed>> open;  // per bucket
  std::deque<ReadyBatch> queue;
  uint64_t fed_next = 0;
  int64_t good_this_epoch = 0;
  std::map<uint64_t, std::vector<uint32_t>> permutations;  // by epoch
  LoaderStats stats;

  std::vector<std::thread> workers;

  State(BucketSet b) : buckets(std::move(b)) {}

  uint64_t Item(uint64_t k) const {
    return k < replay.size() ? replay[k] : start + (k - replay.size());
  }
  bool Finished(uint64_t k) const { return k >= replay.size() && Item(k) >= end_seq; }

  // Sample index of sequence number `seq`. Requires mu.
  uint32_t IndexOf(uint64_t seq) {
    const uint64_t n = samples.size();
    uint64_t epoch = seq / n, pos = seq % n;
    if (!options.shuffle) return static_cast<uint32_t>(pos);
    auto it = permutations.find(epoch);
    if (it == permutations.end()) {
      std::vector<uint32_t> perm(n);
      for (uint64_t i = 0; i < n; ++i) perm[i] = static_cast<uint32_t>(i);
      SplitMix rng(options.seed ^ kShuffleStream, epoch);
      for (uint64_t i = n; i > 1; --i) std::swap(perm[i - 1], perm[rng.Below(i)]);
      while (permutations.size() >= 3) permutations.erase(permutations.begin());
      it = permutations.emplace(epoch, std::move(perm)).first;
    }
    return it->second[pos];
  }

  Processed Process(uint64_t seq, uint32_t index) const {
    Processed r;
    r.seq = seq;
    const SampleRef& ref = samples[index];
    r.key = ref.key;
    SplitMix rng(options.seed, seq);
    const double jitter = options.random_crop ? rng.Uniform() : 0.5;
    const bool flip = options.random_flip && rng.Uniform() < 0.5;
    auto bytes = ReadRange(ref.image);
    if (!bytes.ok()) {
      r.error = absl::StrCat(ref.key, ": ", bytes.status().message());
      return r;
    }
    auto image = DecodeImage(*bytes, options.decode);
    if (!image.ok()) {
      r.error = absl::StrCat(ref.key, ": ", image.status().message());
      return r;
    }
    CropPlan plan = buckets.Plan(image->width, image->height, jitter);
    auto pixels = CropAndResize(*image, plan, flip);
    if (!pixels.ok()) {
      r.error = absl::StrCat(ref.key, ": ", pixels.status().message());
      return r;
    }
    std::string caption;
    if (ref.has_caption) {
      auto text = ReadRange(ref.caption, 1 << 20);
      if (!text.ok()) {
        r.error = absl::StrCat(ref.key, " caption: ", text.status().message());
        return r;
      }
      caption = CleanCaption(*text);
    }
    r.caption = AugmentCaption(caption, options.captions, rng);
    r.ok = true;
    r.bucket = plan.bucket;
    r.pixels = std::move(*pixels);
    r.height = image->height;
    r.width = image->width;
    r.crop_top = plan.crop_top;
    r.crop_left = plan.crop_left;
    return r;
  }

  DataPosition PositionNow() const {
    DataPosition p;
    p.next = fed_next;
    for (const auto& bucket : open) {
      for (const Processed& s : bucket) p.pending.push_back(s.seq);
    }
    return p;
  }

  void Emit(int bucket, int64_t epoch) {
    ReadyBatch b;
    b.samples = std::move(open[bucket]);
    open[bucket].clear();
    b.position = PositionNow();
    b.epoch = epoch;
    queue.push_back(std::move(b));
  }

  // Feeds finished items to the buckets in item order. Requires mu.
  void AssembleLocked() {
    const uint64_t n = samples.size();
    while (true) {
      auto it = done.find(assemble);
      if (it == done.end()) break;
      const bool normal = assemble >= replay.size();
      Processed r = std::move(it->second);
      done.erase(it);
      ++assemble;
      const uint64_t seq = r.seq;
      const int64_t epoch = static_cast<int64_t>(seq / n);
      if (normal) fed_next = seq + 1;
      if (!r.ok) {
        ++stats.skipped;
        if (stats.skip_notes.size() < 20) stats.skip_notes.push_back(r.error);
      } else {
        ++stats.samples;
        ++good_this_epoch;
        int b = r.bucket;
        open[b].push_back(std::move(r));
        if (static_cast<int>(open[b].size()) >= options.batch_size) Emit(b, epoch);
      }
      // End of an epoch: flush the partly filled buckets. A run resumed from
      // a position saved during such a flush (next on an epoch boundary)
      // finishes it after replaying the pending samples.
      const bool epoch_end = normal && seq % n == n - 1;
      const bool resumed_flush = !normal && assemble == replay.size() && start > 0 && start % n == 0;
      if (epoch_end || resumed_flush) {
        for (size_t b = 0; b < open.size(); ++b) {
          if (!open[b].empty()) Emit(static_cast<int>(b), epoch);
        }
      }
      if (epoch_end) {
        if (good_this_epoch == 0 && error.ok()) {
          error = absl::FailedPreconditionError(absl::StrCat(
              "epoch ", epoch, ": none of the ", n, " samples could be decoded; first error: ",
              stats.skip_notes.empty() ? "" : stats.skip_notes.front()));
        }
        good_this_epoch = 0;
      }
    }
  }

  void WorkerLoop() {
    std::unique_lock<std::mutex> lock(mu);
    while (true) {
      work_cv.wait(lock, [&] {
        return stop || !error.ok() ||
               (!Finished(claim) && claim < assemble + window &&
                queue.size() < static_cast<size_t>(options.prefetch_batches));
      });
      if (stop || !error.ok()) return;
      const uint64_t k = claim++;
      const uint64_t seq = Item(k);
      const uint32_t index = IndexOf(seq);
      lock.unlock();
      Processed r = Process(seq, index);
      lock.lock();
      done.emplace(k, std::move(r));
      AssembleLocked();
      ready_cv.notify_all();
      work_cv.notify_all();
    }
  }
};

DataLoader::DataLoader(std::unique_ptr<State> state) : state_(std::move(state)) {}

absl::StatusOr<std::unique_ptr<DataLoader>> DataLoader::Start(std::vector<SampleRef> samples,
                                                             const LoaderOptions& options,
                                                             const DataPosition& start) {
  if (samples.empty()) return absl::InvalidArgumentError("no samples to load");
  if (samples.size() > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError("more than 2^32 samples in one loader");
  }
  if (options.batch_size <= 0 || options.num_workers <= 0 || options.prefetch_batches <= 0 ||
      options.max_epochs < 0 || options.captions.dropout < 0 || options.captions.dropout > 1) {
    return absl::InvalidArgumentError(
        "batch_size, num_workers and prefetch_batches must be positive, max_epochs >= 0 and "
        "caption dropout in [0, 1]");
  }
  auto buckets = BucketSet::Make(options.buckets);
  if (!buckets.ok()) return buckets.status();
  for (uint64_t p : start.pending) {
    if (p >= start.next) return absl::InvalidArgumentError("data position: pending past next");
  }
  auto state = std::make_unique<State>(std::move(*buckets));
  state->samples = std::move(samples);
  state->options = options;
  state->replay = start.pending;
  state->start = start.next;
  state->fed_next = start.next;
  if (options.max_epochs > 0) state->end_seq = options.max_epochs * state->samples.size();
  state->window = std::max<size_t>(static_cast<size_t>(options.prefetch_batches) * options.batch_size,
                                   2 * static_cast<size_t>(options.num_workers));
  state->open.resize(state->buckets.buckets().size());
  State* s = state.get();
  for (int i = 0; i < options.num_workers; ++i) {
    state->workers.emplace_back([s] { s->WorkerLoop(); });
  }
  return std::unique_ptr<DataLoader>(new DataLoader(std::move(state)));
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stop = true;
  }
  state_->work_cv.notify_all();
  for (auto& t : state_->workers) t.join();
}

absl::StatusOr<std::optional<Batch>> DataLoader::Next() {
  ReadyBatch ready;
  {
    std::unique_lock<std::mutex> lock(state_->mu);
    state_->ready_cv.wait(lock, [&] {
      return !state_->queue.empty() || !state_->error.ok() ||
             (state_->Finished(state_->assemble) && state_->done.empty());
    });
    if (state_->queue.empty()) {
      if (!state_->error.ok()) return state_->error;
      return std::optional<Batch>();
    }
    ready = std::move(state_->queue.front());
    state_->queue.pop_front();
    ++state_->stats.batches;
  }
  state_->work_cv.notify_all();
  Batch batch;
  try {
    std::vector<at::Tensor> pixels;
    const int64_t b = static_cast<int64_t>(ready.samples.size());
    batch.original_sizes = at::empty({b, 2}, at::kLong);
    batch.crop_top_left = at::empty({b, 2}, at::kLong);
    auto sizes = batch.original_sizes.accessor<int64_t, 2>();
    auto crops = batch.crop_top_left.accessor<int64_t, 2>();
    for (int64_t i = 0; i < b; ++i) {
      Processed& s = ready.samples[i];
      pixels.push_back(s.pixels);
      batch.captions.push_back(std::move(s.caption));
      batch.keys.push_back(std::move(s.key));
      sizes[i][0] = s.height;
      sizes[i][1] = s.width;
      crops[i][0] = s.crop_top;
      crops[i][1] = s.crop_left;
    }
    batch.pixels = at::stack(pixels).to(at::kFloat).div_(127.5).sub_(1.0);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("collating a batch: ", e.what_without_backtrace()));
  }
  batch.epoch = ready.epoch;
  batch.position = std::move(ready.position);
  return std::optional<Batch>(std::move(batch));
}

LoaderStats DataLoader::stats() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->stats;
}

size_t DataLoader::num_samples() const { return state_->samples.size(); }

}  // namespace dd::data
