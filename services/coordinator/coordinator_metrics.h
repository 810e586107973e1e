// The coordinator's Prometheus metrics (its /metrics, besides the per-RPC
// ones every server has): the run's state as the ledger and the registry
// hold it, read at each scrape.
//   dd_coordinator_chunks{state}               pending, leased, done (this epoch)
//   dd_coordinator_epoch, dd_coordinator_global_step
//   dd_coordinator_samples_trained_total, dd_coordinator_chunk_completions_total
//   dd_coordinator_peers{reachability}         probing, reachable, unreachable, client_only
//   dd_coordinator_samples_per_second          the live peers' reported throughput
//   dd_coordinator_diverged_reports_total      hash votes a peer lost (it resynchronises)
//   dd_coordinator_round_interval_seconds      between the two newest rounds' openings
//   dd_coordinator_ledger_writable             0 once a ledger write failed
// and, from the round planner's events (RoundMetrics):
//   dd_coordinator_rounds_total{outcome}       opened, applied, failed
//   dd_coordinator_round_duration_seconds      applied rounds: the slowest member's averaging
#ifndef SERVICES_COORDINATOR_COORDINATOR_METRICS_H_
#define SERVICES_COORDINATOR_COORDINATOR_METRICS_H_

#include <functional>

#include "common/metrics/prometheus.h"
#include "services/coordinator/coordinator_core.h"
#include "services/coordinator/ledger/chunk_ledger.h"

namespace dd::coordinator {

// Registers the families; `core` and `ledger` must outlive `registry`'s
// scrapes.
void AddCoordinatorMetrics(CoordinatorCore* core, ChunkLedger* ledger,
                           metrics::MetricsRegistry* registry);

// Registers the round families and returns the listener to set as
// RoundPlannerOptions::on_round_event (before the planner exists, so the
// registry is made first).
std::function<void(const RoundEvent&)> RoundMetrics(metrics::MetricsRegistry* registry);

}  // namespace dd::coordinator

#endif  // SERVICES_COORDINATOR_COORDINATOR_METRICS_H_
