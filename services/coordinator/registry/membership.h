// Membership: the one path by which peers enter and leave the run. Three
// objects know about a peer: the ledger (its durable identity and leases),
// PeerLiveness (heartbeats, reachability) and the RoundPlanner (its progress
// report toward the next round). Every join and every removal (a clean
// leave, an admin eviction, a peer found silent) goes through here, so they
// change together and in one order: the ledger first (durable), then the
// two in-memory views. Pure logic: no gRPC types.
#ifndef SERVICES_COORDINATOR_REGISTRY_MEMBERSHIP_H_
#define SERVICES_COORDINATOR_REGISTRY_MEMBERSHIP_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/coordinator/ledger/chunk_ledger.h"
#include "services/coordinator/registry/peer_liveness.h"
#include "services/coordinator/rounds/round_planner.h"

namespace dd::coordinator {

enum class RemovalReason { kLeft, kEvictedByAdmin, kSilent };
const char* RemovalReasonName(RemovalReason reason);

class Membership {
 public:
  // All three must outlive this object.
  Membership(ChunkLedger* ledger, PeerLiveness* liveness, RoundPlanner* rounds);

  // Registers a peer (ChunkLedger::JoinPeer; its errors) and starts
  // tracking it at its public address (else its listen address). The peers
  // it replaced (the same id's earlier incarnation, others at the same
  // public address) are no longer tracked and their reports no longer count.
  absl::StatusOr<JoinOutcome> Join(const std::string& requested_id, const PeerInfo& info);

  // Removes a peer (with `incarnation`: only that one): its leases return to
  // the pool, it is no longer tracked, its report no longer counts. Returns
  // the leases released. Errors as ChunkLedger::RemovePeer (NotFound,
  // FailedPrecondition for a superseded incarnation; nothing changes then).
  absl::StatusOr<uint32_t> Remove(const std::string& peer_id, std::optional<uint64_t> incarnation,
                                  RemovalReason reason);

  // Evicts the peers PeerLiveness found silent (through Remove) and starts
  // due probes. Call about once a second. Returns the evicted peer ids.
  std::vector<std::string> Tick();

 private:
  ChunkLedger* const ledger_;
  PeerLiveness* const liveness_;
  RoundPlanner* const rounds_;
};

}  // namespace dd::coordinator

#endif  // SERVICES_COORDINATOR_REGISTRY_MEMBERSHIP_H_
