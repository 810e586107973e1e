// A trainer's Prometheus metrics (its /metrics with --http_port): the numbers
// of each metrics row (metrics.jsonl) as gauges, counters and histograms
// under Prometheus' names and units. Rows come from the single-peer loop and
// from the peer session; keys not listed in step_metrics.cc are left out
// (the set of series stays fixed).
//   dd_trainer_step, dd_trainer_loss, dd_trainer_learning_rate
//   dd_trainer_step_seconds, dd_trainer_averaging_seconds        (histograms)
//   dd_trainer_compute_seconds_total, dd_trainer_waiting_seconds_total
//   dd_trainer_averaging_sent_bytes_total, dd_trainer_averaging_received_bytes_total
//   dd_trainer_samples_per_second, dd_trainer_global_samples_per_second
//   dd_trainer_round_members, dd_trainer_fraction_averaged
//   dd_trainer_rounds_failed, dd_trainer_stale_gradients_dropped,
//   dd_trainer_nonfinite_gradients                                (run totals)
// GPU memory comes from the driver (common/metrics/gpu_memory:
// dd_gpu_memory_used_bytes{gpu}), registered by the trainer's main.
#ifndef TRAINER_TRAINING_STEP_METRICS_H_
#define TRAINER_TRAINING_STEP_METRICS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "common/metrics/prometheus.h"

namespace dd::training {

// Registers the families in `registry` and returns the sink that feeds them
// (for StepRecorder::AddSink). One per registry.
std::function<void(int64_t step, const std::map<std::string, double>& row)> MakeStepMetricsSink(
    metrics::MetricsRegistry* registry);

}  // namespace dd::training

#endif  // TRAINER_TRAINING_STEP_METRICS_H_
