#include "services/coordinator/registry/membership.h"

#include <glog/logging.h>

namespace dd::coordinator {

const char* RemovalReasonName(RemovalReason reason) {
  switch (reason) {
    case RemovalReason::kLeft: return "left";
    case RemovalReason::kEvictedByAdmin: return "evicted by an admin";
    case RemovalReason::kSilent: return "evicted (no heartbeat)";
  }
  return "removed";
}

Membership::Membership(ChunkLedger* ledger, PeerLiveness* liveness, RoundPlanner* rounds)
    : ledger_(ledger), liveness_(liveness), rounds_(rounds) {}

absl::StatusOr<JoinOutcome> Membership::Join(const std::string& requested_id,
                                             const PeerInfo& info) {
  auto outcome = ledger_->JoinPeer(requested_id, info);
  if (!outcome.ok()) return outcome.status();
  for (const std::string& old : outcome->replaced_peers) {
    liveness_->Forget(old);
    rounds_->Forget(old);
  }
  // A new incarnation starts over: what its predecessor reported is void.
  rounds_->Forget(outcome->peer.peer_id);
  const std::string& address = info.public_address.empty() ? info.listen_address
                                                           : info.public_address;
  liveness_->OnJoined(outcome->peer, address, info.client_only);
  return outcome;
}

absl::StatusOr<uint32_t> Membership::Remove(const std::string& peer_id,
                                            std::optional<uint64_t> incarnation,
                                            RemovalReason reason) {
  auto released = ledger_->RemovePeer(peer_id, incarnation);
  if (!released.ok()) return released.status();
  liveness_->Forget(peer_id, incarnation);
  rounds_->Forget(peer_id, /*hashes=*/false);
  if (reason == RemovalReason::kEvictedByAdmin) rounds_->Disown(peer_id);
  LOG(INFO) << "peer " << peer_id << " " << RemovalReasonName(reason) << "; " << *released
            << " leases released";
  return released;
}

std::vector<std::string> Membership::Tick() {
  std::vector<std::string> evicted;
  for (const PeerHandle& peer : liveness_->Tick()) {
    auto released = Remove(peer.peer_id, peer.incarnation, RemovalReason::kSilent);
    if (released.ok()) {
      evicted.push_back(peer.peer_id);
    } else if (released.status().code() == absl::StatusCode::kNotFound ||
               released.status().code() == absl::StatusCode::kFailedPrecondition) {
      // Removed or superseded meanwhile: stop tracking this incarnation.
      liveness_->Forget(peer.peer_id, peer.incarnation);
    } else {
      LOG(ERROR) << "evicting silent peer " << peer.peer_id << ": " << released.status()
                 << " (retried next tick)";
    }
  }
  return evicted;
}

}  // namespace dd::coordinator
