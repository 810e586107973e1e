#include "trainer/training/step_metrics.h"

#include <memory>
#include <vector>

namespace dd::training {
namespace {

using metrics::Counter;
using metrics::Gauge;
using metrics::Histogram;

// How one key of a metrics row becomes a metric.
struct Mapping {
  const char* key;
  enum Kind { kGauge, kCounter, kHistogram } kind;
  const char* name;
  const char* help;
};

constexpr Mapping kMappings[] = {
    {"loss", Mapping::kGauge, "dd_trainer_loss", "Training loss of the last step."},
    {"lr", Mapping::kGauge, "dd_trainer_learning_rate", "Learning rate of the last step."},
    {"step_seconds", Mapping::kHistogram, "dd_trainer_step_seconds",
     "Wall time of a step (global step, or local step with outer steps)."},
    {"averaging_seconds", Mapping::kHistogram, "dd_trainer_averaging_seconds",
     "Time a global step spent averaging with the other peers."},
    {"compute_seconds", Mapping::kCounter, "dd_trainer_compute_seconds_total",
     "Time spent computing (forward, backward, optimizer)."},
    {"waiting_seconds", Mapping::kCounter, "dd_trainer_waiting_seconds_total",
     "Time spent neither computing nor averaging (waiting for rounds and data)."},
    {"bytes_sent", Mapping::kCounter, "dd_trainer_averaging_sent_bytes_total",
     "Bytes sent to other peers while averaging."},
    {"bytes_received", Mapping::kCounter, "dd_trainer_averaging_received_bytes_total",
     "Bytes received from other peers while averaging."},
    {"local_samples_per_second", Mapping::kGauge, "dd_trainer_samples_per_second",
     "This peer's training throughput."},
    {"images_per_second", Mapping::kGauge, "dd_trainer_images_per_second",
     "Single-peer training throughput."},
    {"global_samples_per_second", Mapping::kGauge, "dd_trainer_global_samples_per_second",
     "The collaboration's throughput as this peer saw the last round."},
    {"members", Mapping::kGauge, "dd_trainer_round_members",
     "Members of the last averaging round."},
    {"fraction_averaged", Mapping::kGauge, "dd_trainer_fraction_averaged",
     "Fraction of the vector the last round averaged (1: all of it)."},
    {"rounds_failed", Mapping::kGauge, "dd_trainer_rounds_failed",
     "Averaging rounds that failed since this peer started."},
    {"stale_gradients_dropped", Mapping::kGauge, "dd_trainer_stale_gradients_dropped",
     "Contributions dropped as stale since this peer started."},
    {"nonfinite_gradients", Mapping::kGauge, "dd_trainer_nonfinite_gradients",
     "Steps whose gradients were not finite since this peer started."},
};

struct Series {
  const char* key;
  Gauge* gauge = nullptr;
  Counter* counter = nullptr;
  Histogram* histogram = nullptr;
};

}  // namespace

std::function<void(int64_t, const std::map<std::string, double>&)> MakeStepMetricsSink(
    metrics::MetricsRegistry* registry) {
  auto series = std::make_shared<std::vector<Series>>();
  for (const Mapping& m : kMappings) {
    Series s{m.key};
    switch (m.kind) {
      case Mapping::kGauge:
        s.gauge = registry->AddGauge(m.name, m.help)->Get();
        break;
      case Mapping::kCounter:
        s.counter = registry->AddCounter(m.name, m.help)->Get();
        break;
      case Mapping::kHistogram:
        s.histogram =
            registry->AddHistogram(m.name, m.help, metrics::ExponentialBuckets(0.01, 2, 14))
                ->Get();
        break;
    }
    series->push_back(s);
  }
  Gauge* step_gauge = registry->AddGauge("dd_trainer_step", "The last step recorded.")->Get();
  return [series, step_gauge](int64_t step, const std::map<std::string, double>& row) {
    step_gauge->Set(static_cast<double>(step));
    for (const Series& s : *series) {
      auto it = row.find(s.key);
      if (it == row.end()) continue;
      if (s.gauge != nullptr) s.gauge->Set(it->second);
      if (s.counter != nullptr) s.counter->Increment(it->second);
      if (s.histogram != nullptr) s.histogram->Observe(it->second);
    }
  };
}

}  // namespace dd::training
