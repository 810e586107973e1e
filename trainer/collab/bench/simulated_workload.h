// A stand-in for the trainer that takes a GPU's time without a GPU, so the
// collaboration's network side (coordinator, butterfly, outer steps and
// their overlap) can be measured at full model size on any machine: a flat
// weight vector of the model's size, local steps that last a given time
// (the measured GPU step time), and updates that change the weights the way
// training does (every local step moves a slice of them), so the exchanged
// pseudo-gradients are dense and the codecs do their full work.
#ifndef TRAINER_COLLAB_BENCH_SIMULATED_WORKLOAD_H_
#define TRAINER_COLLAB_BENCH_SIMULATED_WORKLOAD_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "trainer/collab/peer.h"
#include "trainer/collab/peer_links.h"

namespace dd::collab::bench {

struct SimulatedOptions {
  int64_t elements = 1 << 20;              // weights
  absl::Duration step_time = absl::Milliseconds(10);  // per local optimizer step
  int64_t batch_size = 32;                 // samples per step (reported to the coordinator)
  uint64_t seed = 0;                       // the weights' start (every peer the same)
};

// What one simulated peer measured.
struct SimulatedReport {
  int64_t local_steps = 0;
  double compute_seconds = 0;  // simulated GPU time (the steps' durations)
  double wall_seconds = 0;     // first batch to the end of the session
  double cpu_seconds = 0;      // this process's CPU time (user + system) in that time
  // Bytes of this peer's requests and of the answers to them (the answers
  // its own reducer sends are counted by the peers that receive them).
  uint64_t bytes_sent = 0, bytes_received = 0;
  // The session's metrics rows grouped by the outer step they started in
  // (the shared weights' version): local steps and their wall seconds,
  // which add up to the run's time. The groups between the first and the
  // last are the steady state (no start-up, no final exchange).
  struct OuterGroup {
    int64_t outer_step = 0;
    int64_t local_steps = 0;
    double seconds = 0;          // wall time the rows cover
    double busy_seconds = 0;     // of which in local steps (as the session measured them)
  };
  std::vector<OuterGroup> outer_groups;
};

class SimulatedWorkload final : public PeerWorkload {
 public:
  // Close() writes what this peer measured to `*report` (which must outlive
  // this object).
  SimulatedWorkload(const SimulatedOptions& options, SimulatedReport* report);
  ~SimulatedWorkload() override;

  LocalModel* model() override;
  BatchSource* batches() override;
  int micro_batches_per_step() const override { return 1; }
  void Close() override;

 private:
  class Model;
  class Batches;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Batches> batches_;
  SimulatedReport* const report_;
  bool closed_ = false;
};

}  // namespace dd::collab::bench

#endif  // TRAINER_COLLAB_BENCH_SIMULATED_WORKLOAD_H_
