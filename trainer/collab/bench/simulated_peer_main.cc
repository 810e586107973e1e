// simulated_peer: a collaboration peer whose model is a flat vector of
// --elements weights and whose local step takes --step_ms (a GPU's measured
// step time), with the real coordinator link, butterfly all-reduce, outer
// steps and overlap. For network benchmarks at full model size on machines
// without a GPU (tools/bench/utilisation_bench.sh). Prints one JSON line:
//   {"local_steps": .., "compute_seconds": .., "wall_seconds": .., "cpu_seconds": ..,
//    "utilisation": .., "bytes_sent": .., "bytes_received": ..,
//    "outer_groups": [{"outer_step": .., "local_steps": .., "seconds": ..,
//                      "busy_seconds": ..}, ..]}
//
//   simulated_peer --coordinator=HOST:PORT --listen=IP:PORT --elements=N
//       --step_ms=364 --batch_size=32 --auth_token_file=token
#include <gflags/gflags.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "common/init/init.h"
#include "common/rpc/security.h"
#include "common/status/status_macros.h"
#include "trainer/collab/bench/simulated_workload.h"
#include "trainer/collab/peer.h"

DEFINE_string(coordinator, "", "host:port of the run's coordinator.");
DEFINE_string(listen, "127.0.0.1:0", "Where this peer's averaging service listens.");
DEFINE_string(public_address, "", "The address others reach it at (default: --listen's).");
DEFINE_string(peer_name, "", "Display name.");
DEFINE_int64(elements, 1 << 20, "Weights of the simulated model.");
DEFINE_double(step_ms, 10, "Duration of one simulated local step (forward, backward, update).");
DEFINE_int64(batch_size, 32, "Samples per local step.");
DEFINE_int32(sender_timeout_s, 60, "Averaging: a silent sender is excluded after this.");
DEFINE_int32(reducer_timeout_s, 120, "Averaging: a silent reducer is given up after this.");

namespace {

absl::Status Run(int, char**) {
  if (FLAGS_coordinator.empty()) return absl::InvalidArgumentError("--coordinator is required");
  if (FLAGS_elements <= 0 || FLAGS_step_ms < 0 || FLAGS_batch_size <= 0) {
    return absl::InvalidArgumentError("--elements and --batch_size must be > 0, --step_ms >= 0");
  }
  dd::collab::PeerOptions po;
  po.coordinator = FLAGS_coordinator;
  po.listen = FLAGS_listen;
  po.public_address = FLAGS_public_address;
  po.name = FLAGS_peer_name;
  po.sender_timeout = absl::Seconds(FLAGS_sender_timeout_s);
  po.reducer_timeout = absl::Seconds(FLAGS_reducer_timeout_s);
  ASSIGN_OR_RETURN(po.security, dd::SecurityConfigFromFlags());
  dd::collab::bench::SimulatedOptions so;
  so.elements = FLAGS_elements;
  so.step_time = absl::Microseconds(static_cast<int64_t>(FLAGS_step_ms * 1000));
  so.batch_size = FLAGS_batch_size;
  dd::collab::bench::SimulatedReport report;
  RETURN_IF_ERROR(dd::collab::RunPeerWith(
      po, [&](const dd::collab::WorkloadContext&)
              -> absl::StatusOr<std::unique_ptr<dd::collab::PeerWorkload>> {
        return std::make_unique<dd::collab::bench::SimulatedWorkload>(so, &report);
      }));
  nlohmann::json groups = nlohmann::json::array();
  for (const auto& g : report.outer_groups) {
    groups.push_back({{"outer_step", g.outer_step}, {"local_steps", g.local_steps},
                      {"seconds", g.seconds}, {"busy_seconds", g.busy_seconds}});
  }
  nlohmann::json out = {
      {"local_steps", report.local_steps},
      {"compute_seconds", report.compute_seconds},
      {"wall_seconds", report.wall_seconds},
      {"cpu_seconds", report.cpu_seconds},
      {"utilisation", report.wall_seconds > 0 ? report.compute_seconds / report.wall_seconds : 0},
      {"bytes_sent", report.bytes_sent},
      {"bytes_received", report.bytes_received},
      {"outer_groups", groups}};
  std::cout << out.dump() << std::endl;
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  return dd::RunMain("simulated_peer --coordinator=HOST:PORT --elements=N --step_ms=MS", argc, argv,
                     Run);
}
