#include "trainer/collab/bench/simulated_workload.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <thread>

#include <sys/resource.h>

#include "absl/strings/str_cat.h"
#include "common/crypto/sha256.h"

namespace dd::collab::bench {
namespace {

using Clock = std::chrono::steady_clock;

double ProcessCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// A fixed pseudo-random value in [-1, 1) for element i at step s (splitmix64).
float Pattern(uint64_t i, uint64_t s) {
  uint64_t z = i * 0x9E3779B97F4A7C15ull + s * 0xBF58476D1CE4E5B9ull + 1;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) / static_cast<float>(1 << 23) - 1.0f;
}

// Every local step moves this share of the weights (a different slice each
// step), so after a few dozen steps the pseudo-gradient is dense.
constexpr int64_t kSlices = 16;

// Step sizes of a local update, drawn once: a table lookup per weight keeps
// the stand-in's own CPU time small next to the averaging it measures.
const std::vector<float>& UpdateTable() {
  static const std::vector<float>* table = [] {
    auto* t = new std::vector<float>(4096);
    for (size_t i = 0; i < t->size(); ++i) (*t)[i] = 1e-4f * Pattern(i, 99);
    return t;
  }();
  return *table;
}

}  // namespace

class SimulatedWorkload::Model final : public LocalModel {
 public:
  explicit Model(const SimulatedOptions& o) : o_(o), weights_(o.elements) {
    for (int64_t i = 0; i < o.elements; ++i) weights_[i] = 0.05f * Pattern(i, o.seed);
  }

  absl::StatusOr<double> AccumulateBatch(const data::Batch& batch) override {
    if (!first_.has_value()) {
      first_ = Clock::now();
      first_cpu_ = ProcessCpuSeconds();
    }
    // The GPU's forward, backward and update take step_time together: the
    // stand-in's own update (ApplyUpdate, on the CPU here) counts toward it.
    const absl::Duration rest = o_.step_time - last_update_;
    if (rest > absl::ZeroDuration()) std::this_thread::sleep_for(absl::ToChronoNanoseconds(rest));
    compute_seconds_ += absl::ToDoubleSeconds(o_.step_time);
    accumulated_ += static_cast<int64_t>(batch.keys.size());
    keys_.insert(keys_.end(), batch.keys.begin(), batch.keys.end());
    return 0.1;
  }
  int64_t accumulated_samples() const override { return accumulated_; }
  std::vector<std::string> AccumulatedKeys() const override { return keys_; }
  absl::StatusOr<std::vector<float>> AccumulatedGradient() const override {
    std::vector<float> g(weights_.size());
    const std::vector<float>& table = UpdateTable();
    const uint64_t shift = static_cast<uint64_t>(step_) * 7919;
    for (size_t i = 0; i < g.size(); ++i) g[i] = 10.0f * table[(i + shift) & 4095];
    return g;
  }
  absl::StatusOr<training::StepReport> ApplyUpdate(const std::vector<float>* gradient,
                                                   bool /*local_finite*/) override {
    const auto update_start = Clock::now();
    training::StepReport r;
    if (gradient != nullptr) {
      if (gradient->size() != weights_.size()) {
        return absl::InvalidArgumentError("gradient of the wrong length");
      }
      for (size_t i = 0; i < weights_.size(); ++i) weights_[i] -= 0.1f * (*gradient)[i];
    } else {
      // A local optimizer step: one slice of the weights moves.
      const int64_t n = static_cast<int64_t>(weights_.size());
      const int64_t slice = (n + kSlices - 1) / kSlices;
      const int64_t begin = (step_ % kSlices) * slice, end = std::min(n, begin + slice);
      const std::vector<float>& table = UpdateTable();
      const uint64_t shift = static_cast<uint64_t>(step_) * 7919;
      for (int64_t i = begin; i < end; ++i) weights_[i] -= table[(i + shift) & 4095];
      last_update_ = absl::FromChrono(Clock::now() - update_start);
    }
    ++step_;
    ++local_steps_;
    r.step = step_;
    r.loss = 0.1;
    r.samples = accumulated_;
    accumulated_ = 0;
    keys_.clear();
    return r;
  }
  void DropAccumulated() override {
    accumulated_ = 0;
    keys_.clear();
  }
  int64_t num_elements() const override { return static_cast<int64_t>(weights_.size()); }
  absl::Status ReadParameters(std::vector<float>* out) const override {
    *out = weights_;
    return absl::OkStatus();
  }
  absl::Status WriteParameters(const std::vector<float>& values) override {
    if (values.size() != weights_.size()) return absl::InvalidArgumentError("wrong length");
    weights_ = values;
    return absl::OkStatus();
  }
  absl::Status AddToParameters(const std::vector<float>& delta) override {
    if (delta.size() != weights_.size()) return absl::InvalidArgumentError("wrong length");
    for (size_t i = 0; i < delta.size(); ++i) weights_[i] += delta[i];
    return absl::OkStatus();
  }
  int64_t step() const override { return step_; }
  void SetStep(int64_t step) override { step_ = step; }
  std::string ParameterHash() const override {
    return DigestToHex(Sha256Of(absl::string_view(reinterpret_cast<const char*>(weights_.data()),
                                                  weights_.size() * sizeof(float))));
  }
  absl::StatusOr<std::string> ExportState(const StateExtras&) const override {
    return absl::FailedPreconditionError(
        "a simulated peer serves no training state (benchmark peers start together)");
  }
  absl::Status ImportState(const std::string&, StateExtras*) override {
    return absl::FailedPreconditionError("a simulated peer cannot take a training state");
  }
  absl::Status RecordMetrics(const training::StepReport&,
                             const std::map<std::string, double>& extra) override {
    auto get = [&](const char* key) {
      auto it = extra.find(key);
      return it == extra.end() ? 0.0 : it->second;
    };
    bytes_sent_ += static_cast<uint64_t>(get("bytes_sent"));
    bytes_received_ += static_cast<uint64_t>(get("bytes_received"));
    const auto outer = static_cast<int64_t>(get("outer_step"));
    if (groups_.empty() || groups_.back().outer_step != outer) {
      groups_.push_back({outer, 0, 0.0, 0.0});
    }
    groups_.back().local_steps += 1;
    groups_.back().seconds += get("step_seconds");
    groups_.back().busy_seconds += get("compute_seconds");
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> SaveCheckpoint() override { return std::string(); }
  absl::StatusOr<std::string> WriteSamples() override { return std::string(); }

  void Fill(SimulatedReport* r, Clock::time_point end) const {
    r->local_steps = local_steps_;
    r->compute_seconds = compute_seconds_;
    r->wall_seconds = first_.has_value() ? std::chrono::duration<double>(end - *first_).count() : 0;
    r->cpu_seconds = first_.has_value() ? ProcessCpuSeconds() - first_cpu_ : 0;
    r->bytes_sent = bytes_sent_;
    r->bytes_received = bytes_received_;
    r->outer_groups = groups_;
  }

 private:
  const SimulatedOptions o_;
  std::vector<float> weights_;
  int64_t step_ = 0, local_steps_ = 0, accumulated_ = 0;
  std::vector<std::string> keys_;
  double compute_seconds_ = 0;
  uint64_t bytes_sent_ = 0, bytes_received_ = 0;
  std::vector<SimulatedReport::OuterGroup> groups_;
  std::optional<Clock::time_point> first_;
  double first_cpu_ = 0;
  absl::Duration last_update_ = absl::ZeroDuration();  // the last local update's wall time
};

// Batches of keys only: the simulated model reads no pixels.
class SimulatedWorkload::Batches final : public BatchSource {
 public:
  explicit Batches(int64_t batch_size) : batch_size_(batch_size) {}
  absl::StatusOr<data::Batch> Next() override {
    data::Batch b;
    for (int64_t i = 0; i < batch_size_; ++i) b.keys.push_back(absl::StrCat("sim-", next_++));
    return b;
  }

 private:
  const int64_t batch_size_;
  uint64_t next_ = 0;
};

SimulatedWorkload::SimulatedWorkload(const SimulatedOptions& options, SimulatedReport* report)
    : model_(std::make_unique<Model>(options)),
      batches_(std::make_unique<Batches>(options.batch_size)),
      report_(report) {}
SimulatedWorkload::~SimulatedWorkload() = default;

LocalModel* SimulatedWorkload::model() { return model_.get(); }
BatchSource* SimulatedWorkload::batches() { return batches_.get(); }

void SimulatedWorkload::Close() {
  if (closed_) return;
  closed_ = true;
  *report_ = SimulatedReport();
  model_->Fill(report_, Clock::now());
}

}  // namespace dd::collab::bench
