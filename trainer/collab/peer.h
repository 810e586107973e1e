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

#include "absl/status/status.h"
#include "common/rpc/security.h"
#include "trainer/training/trainer.h"

namespace dd::collab {

struct PeerOptions {
  training::TrainerOptions trainer;  // dataset_dir unused: data comes from leased chunks
  std::string coordinator;           // host:port
  std::string listen = "127.0.0.1:0";
  std::string public_address;
  bool client_only = false;
  std::string name;
  // Stop accumulating at this many samples and wait for the round (0: keep
  // accumulating until the round opens). Bounds how stale a contribution
  // can be and makes runs reproducible in tests.
  int64_t max_local_samples_per_step = 0;
  std::string codec = "";  // averaging codec; empty: the run config's, else none
  absl::Duration sender_timeout = absl::Seconds(10);
  absl::Duration reducer_timeout = absl::Seconds(20);
  SecurityConfig security;
  // Concurrent state downloads this peer serves to late joiners.
  int max_state_downloads = 2;
  // Fault tests: poison this peer's contribution to this global step
  // (1-based; 0: never).
  int64_t nan_contribution_at_step_for_test = 0;
  // When set, after each global step this peer applies, appends a line
  // "STEP KEY" for every sample whose gradient it contributed (equivalence
  // tests and audits of which data a step saw).
  std::string trained_keys_log;
};

// Runs a PeerSession (peer_session.h) with the real parts until the
// collaboration reaches trainer.max_steps (or the run config's "max_steps"),
// in the run config's sync mode (sync_config.h). FailedPrecondition / Unavailable with a message when the
// coordinator or dataset cannot be used.
absl::Status RunPeer(const PeerOptions& options);

}  // namespace dd::collab

#endif  // TRAINER_COLLAB_PEER_H_
