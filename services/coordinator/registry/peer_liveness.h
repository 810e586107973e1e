// PeerLiveness: who is alive and who can be reached, on top of the ledger's
// durable peer identities. Pure logic (no gRPC types); time from a Clock.
//
// - Heartbeats: a peer silent for longer than `ttl` is reported by Tick, and
//   Membership evicts it (its leases return to the pool at once).
// - Reachability: a joining peer with an address is PROBING until a health
//   check at its public address answers (REACHABLE, listed with its
//   address) or fails (UNREACHABLE, retried with backoff, never listed).
//   Reachable peers are re-probed periodically and withdrawn when they stop
//   answering.
// After a coordinator restart every active peer gets a fresh `ttl` to
// heartbeat again and is probed anew.
#ifndef SERVICES_COORDINATOR_REGISTRY_PEER_LIVENESS_H_
#define SERVICES_COORDINATOR_REGISTRY_PEER_LIVENESS_H_

#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/time/clock.h"
#include "services/coordinator/ledger/chunk_ledger.h"
#include "services/coordinator/registry/health_prober.h"

namespace dd::coordinator {

enum class Reachability { kProbing, kReachable, kUnreachable, kClientOnly };

struct LivenessOptions {
  absl::Duration ttl = absl::Seconds(60);
  absl::Duration first_retry = absl::Seconds(1);
  absl::Duration max_retry = absl::Seconds(30);
  absl::Duration reprobe_interval = absl::Seconds(30);
};

struct PeerStatus {
  std::string peer_id;
  uint64_t incarnation = 0;
  Reachability reachability = Reachability::kProbing;
  std::string address;  // the public address probed (may be unreachable)
  double samples_per_second = 0;
  absl::Time last_heartbeat;
  uint64_t reported_step = 0;  // of its last progress report
};

class PeerLiveness {
 public:
  // `ledger`, `prober` and `clock` must outlive this object. Starts tracking
  // the ledger's active peers.
  PeerLiveness(ChunkLedger* ledger, HealthProber* prober, Clock* clock, LivenessOptions options);
  ~PeerLiveness();

  // Starts tracking a peer the ledger just registered (replacing any earlier
  // incarnation) and probes it.
  void OnJoined(const PeerHandle& peer, const std::string& public_address, bool client_only);

  // Records a heartbeat (a progress report is one too, with the global step
  // it names). NotFound / FailedPrecondition as ChunkLedger::CheckPeer.
  absl::Status Heartbeat(const PeerHandle& peer, double samples_per_second,
                         std::optional<uint64_t> reported_step = std::nullopt);

  // Stops tracking a peer (Membership removed it); with `incarnation`, only
  // if that is the one tracked.
  void Forget(const std::string& peer_id, std::optional<uint64_t> incarnation = std::nullopt);

  // Starts due probes and returns the peers silent for longer than `ttl`
  // (still tracked until forgotten). Call periodically (Membership::Tick,
  // every second).
  std::vector<PeerHandle> Tick();

  // Statuses of every tracked peer, by peer id.
  std::vector<PeerStatus> Snapshot() const;

  // Blocks until no probe is outstanding (tests).
  void WaitForProbesForTest();

 private:
  struct Entry {
    PeerStatus status;
    bool probe_in_flight = false;
    absl::Time next_probe;
    absl::Duration retry;
  };
  struct ProbeRequest {
    std::string peer_id;
    uint64_t incarnation;
    std::string address;
  };
  // Marks a probe of `entry` as started; the caller starts it (Launch) after
  // releasing mu_, because the prober may call back at once.
  ProbeRequest BeginProbeLocked(Entry* entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Launch(const std::vector<ProbeRequest>& probes);
  void OnProbeDone(const std::string& peer_id, uint64_t incarnation, bool serving);

  // Fixed after construction.
  ChunkLedger* const ledger_;
  HealthProber* const prober_;
  Clock* const clock_;
  const LivenessOptions options_;

  mutable absl::Mutex mu_;
  std::map<std::string, Entry> peers_ ABSL_GUARDED_BY(mu_);
  int probes_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace dd::coordinator

#endif  // SERVICES_COORDINATOR_REGISTRY_PEER_LIVENESS_H_
