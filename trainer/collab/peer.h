// The trainer as a peer of a collaborative run: joins the coordinator,
// trains on the chunks it leases (ChunkStream), reports its progress, and
// when the coordinator opens an averaging round, averages its accumulated
// gradient with the other members over the butterfly all-reduce and applies
// the same optimizer step as every other member. After each global step it
// logs a hash of its parameters; in a run without faults all members' hashes
// agree at every step. A peer that joins late, or misses a round, downloads
// the training state from a live peer (StateService) and goes on from there.
#ifndef TRAINER_COLLAB_PEER_H_
#define TRAINER_COLLAB_PEER_H_

#include <cstdint>
#include <string>

#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/rpc/security.h"
#include "protos/coordinator.pb.h"
#include "trainer/collab/coordinator_client.h"
#include "trainer/collab/peer_links.h"
#include "trainer/collab/sync_config.h"
#include "trainer/training/trainer.h"

namespace dd::collab {

struct PeerOptions {
  // dataset_dir unused: data comes from leased chunks. An empty model_dir
  // takes the run configuration's "model" (and "model_config"): a folder,
  // Hub name or single file, resolved with these Hub settings.
  training::TrainerOptions trainer;
  std::string hf_token_file, hf_variant;
  std::string coordinator;           // host:port
  std::string listen = "127.0.0.1:0";
  std::string public_address;
  bool client_only = false;
  std::string name;
  // Stop accumulating at this many samples and wait for the round (0: keep
  // accumulating until the round opens). Bounds how stale a contribution
  // can be and makes runs reproducible in tests.
  int64_t max_local_samples_per_step = 0;
  // Declared upload capacity (Mbit/s) reported with progress; 0: none.
  double bandwidth_mbps = 0;
  // SessionOptions::linger.
  absl::Duration linger_after_run = absl::Seconds(120);
  std::string codec = "";  // averaging codec; empty: the run config's, else none
  absl::Duration sender_timeout = absl::Seconds(10);
  absl::Duration reducer_timeout = absl::Seconds(20);
  SecurityConfig security;
  // Concurrent state downloads this peer serves to late joiners.
  int max_state_downloads = 2;
  // Fault tests: poison this peer's contribution to this global step
  // (1-based; 0: never).
  int64_t nan_contribution_at_step_for_test = 0;
  // Security tests: this peer acts as a dishonest reducer, answering every
  // part of its span with the mean times this factor (0: honest).
  double scale_reduced_means_for_test = 0;
  // Security tests: this peer acts as a poisoned sender, sending each
  // contribution times this factor with weight 1e300, past its own norm
  // bound (0: honest).
  double poison_contributions_for_test = 0;
  // Security tests: this peer acts as a dishonest donor, serving states
  // changed by this mode: "weights" (one weight moved, finite and
  // well-formed, with a matching SHA-256), "nan" (one weight NaN) or
  // "oversize" (padded past what a state of this model can be). Empty:
  // honest.
  std::string serve_tampered_state_for_test;
  // When set, after each global step this peer applies, appends a line
  // "STEP KEY" for every sample whose gradient it contributed (equivalence
  // tests and audits of which data a step saw).
  std::string trained_keys_log;
};

// What a peer trains and on which samples: the trainer on leased chunks
// (RunPeer), or a stand-in (trainer/collab/bench: a simulated model that
// takes a GPU's step time, for network benchmarks without a GPU).
class PeerWorkload {
 public:
  virtual ~PeerWorkload() = default;
  virtual LocalModel* model() = 0;
  virtual BatchSource* batches() = 0;
  // Micro-batches per local optimizer step (outer steps count local steps).
  virtual int micro_batches_per_step() const = 0;
  // The session ended: returns leases, logs what the data side did.
  virtual void Close() = 0;
};

// What a workload is made from, once the peer has joined.
struct WorkloadContext {
  const PeerOptions* options = nullptr;
  const cv1::JoinResponse* join = nullptr;
  CoordinatorClient* coordinator = nullptr;  // joined; outlives the workload
  SyncConfig sync;
  int64_t max_steps = 0;  // global steps of the run (outer steps in outer mode)
};
using WorkloadFactory =
    std::function<absl::StatusOr<std::unique_ptr<PeerWorkload>>(const WorkloadContext&)>;

// Runs a PeerSession (peer_session.h) with the real parts until the
// collaboration reaches trainer.max_steps (or the run config's "max_steps"),
// in the run config's sync mode (sync_config.h). FailedPrecondition / Unavailable with a message when the
// coordinator or dataset cannot be used.
absl::Status RunPeer(const PeerOptions& options);

// RunPeer with another workload: the coordinator, the averaging and state
// services, heartbeats and the session are the real ones.
absl::Status RunPeerWith(const PeerOptions& options, const WorkloadFactory& make_workload);

}  // namespace dd::collab

#endif  // TRAINER_COLLAB_PEER_H_
