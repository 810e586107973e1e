#include "services/coordinator/coordinator_metrics.h"

#include <string>

namespace dd::coordinator {

using metrics::GaugeSamples;

void AddCoordinatorMetrics(CoordinatorCore* core, ChunkLedger* ledger,
                           metrics::MetricsRegistry* registry) {
  // One RunState per scrape would be read by each family; they are cheap
  // (counters the ledger keeps), so each reads its own.
  auto state = [core]() -> v1::RunState {
    auto s = core->GetRunState({});
    return s.ok() ? *s : v1::RunState();
  };
  registry->AddGaugeFunction(
      "dd_coordinator_chunks", "Chunks of the current epoch by state.", {"state"}, [state] {
        v1::RunState s = state();
        return GaugeSamples{{{"pending"}, static_cast<double>(s.chunks_pending())},
                            {{"leased"}, static_cast<double>(s.chunks_leased())},
                            {{"done"}, static_cast<double>(s.chunks_done())}};
      });
  registry->AddGaugeFunction("dd_coordinator_epoch",
                             "The current epoch: every chunk trained at least this often.", {},
                             [state] { return GaugeSamples{{{}, double(state().epoch())}}; });
  registry->AddGaugeFunction("dd_coordinator_global_step", "Averaging rounds opened so far.", {},
                             [state] { return GaugeSamples{{{}, double(state().global_step())}}; });
  registry->AddCounterFunction(
      "dd_coordinator_samples_trained_total", "Samples trained, all epochs (from the ledger).",
      {}, [state] { return GaugeSamples{{{}, double(state().samples_done())}}; });
  registry->AddCounterFunction(
      "dd_coordinator_chunk_completions_total", "Chunk completions, all epochs.", {},
      [state] { return GaugeSamples{{{}, double(state().completions())}}; });
  registry->AddGaugeFunction(
      "dd_coordinator_samples_per_second", "Throughput the live peers report, summed.", {},
      [state] { return GaugeSamples{{{}, state().samples_per_second()}}; });
  registry->AddGaugeFunction(
      "dd_coordinator_peers", "Live peers by the reachability of their published address.",
      {"reachability"}, [core] {
        double probing = 0, reachable = 0, unreachable = 0, client_only = 0;
        auto peers = core->ListPeers({});
        if (peers.ok()) {
          for (const auto& p : peers->peers()) {
            switch (p.reachability()) {
              case v1::REACHABLE:
                ++reachable;
                break;
              case v1::UNREACHABLE:
                ++unreachable;
                break;
              case v1::CLIENT_ONLY:
                ++client_only;
                break;
              default:
                ++probing;
            }
          }
        }
        return GaugeSamples{{{"probing"}, probing},
                            {{"reachable"}, reachable},
                            {{"unreachable"}, unreachable},
                            {{"client_only"}, client_only}};
      });
  registry->AddCounterFunction(
      "dd_coordinator_diverged_reports_total",
      "Progress reports whose parameter hash differed from the other members' (the peer "
      "resynchronises).",
      {}, [core] { return GaugeSamples{{{}, double(core->diverged_reports())}}; });
  registry->AddCounterFunction(
      "dd_coordinator_audit_verdicts_total",
      "Reducer audit verdicts reported by auditors (passed, mismatch, refused, incomplete).",
      {"verdict"}, [core] {
        return GaugeSamples{
            {{"passed"}, double(core->audit_verdicts(v1::AUDIT_PASSED))},
            {{"mismatch"}, double(core->audit_verdicts(v1::AUDIT_MISMATCH))},
            {{"refused"}, double(core->audit_verdicts(v1::AUDIT_REFUSED))},
            {{"incomplete"}, double(core->audit_verdicts(v1::AUDIT_INCOMPLETE))}};
      });
  registry->AddCounterFunction(
      "dd_coordinator_reducers_banned_total",
      "Reducers evicted and banned after two auditors found their reductions dishonest.", {},
      [core] { return GaugeSamples{{{}, double(core->reducers_banned())}}; });
  registry->AddGaugeFunction(
      "dd_coordinator_round_interval_seconds",
      "Time between the openings of the two newest averaging rounds (a global step's length).",
      {}, [core] {
        auto rounds = core->ListRounds({});
        double interval = 0;
        if (rounds.ok() && rounds->rounds_size() >= 2) {
          interval = (rounds->rounds(0).opened_unix_ms() - rounds->rounds(1).opened_unix_ms()) / 1e3;
        }
        return GaugeSamples{{{}, interval}};
      });
  registry->AddGaugeFunction(
      "dd_coordinator_ledger_writable",
      "1 while the ledger accepts changes; 0 after a failed write (restart the coordinator).",
      {}, [ledger] { return GaugeSamples{{{}, ledger->AcceptsChanges() ? 1.0 : 0.0}}; });
}

std::function<void(const RoundEvent&)> RoundMetrics(metrics::MetricsRegistry* registry) {
  metrics::Family<metrics::Counter>* rounds = registry->AddCounter(
      "dd_coordinator_rounds_total",
      "Averaging rounds opened, and how they ended: applied by every member, or failed (a "
      "member's all-reduce failed, or a member did not report by the deadline plus the report "
      "TTL).",
      {"outcome"});
  metrics::Counter* opened = rounds->WithLabels({"opened"});
  metrics::Counter* applied = rounds->WithLabels({"applied"});
  metrics::Counter* failed = rounds->WithLabels({"failed"});
  metrics::Histogram* duration = registry->AddHistogram(
      "dd_coordinator_round_duration_seconds",
      "Averaging time of applied rounds: the slowest member's, as the members reported it.",
      metrics::ExponentialBuckets(0.25, 2, 12))->Get();
  return [=](const RoundEvent& e) {
    switch (e.kind) {
      case RoundEvent::Kind::kOpened:
        opened->Increment();
        break;
      case RoundEvent::Kind::kApplied:
        applied->Increment();
        duration->Observe(e.duration_seconds);
        break;
      case RoundEvent::Kind::kFailed:
        failed->Increment();
        break;
    }
  };
}

}  // namespace dd::coordinator
