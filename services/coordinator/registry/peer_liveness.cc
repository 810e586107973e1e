#include "services/coordinator/registry/peer_liveness.h"

#include <algorithm>

#include <glog/logging.h>

namespace dd::coordinator {

PeerLiveness::PeerLiveness(ChunkLedger* ledger, HealthProber* prober, Clock* clock,
                           LivenessOptions options)
    : ledger_(ledger), prober_(prober), clock_(clock), options_(options) {
  for (const auto& p : ledger_->ActivePeers()) {
    std::string address = p.public_address().empty() ? p.listen_address() : p.public_address();
    OnJoined({p.peer_id(), p.incarnation()}, address, p.client_only());
  }
}

PeerLiveness::~PeerLiveness() { WaitForProbesForTest(); }

void PeerLiveness::OnJoined(const PeerHandle& peer, const std::string& public_address,
                            bool client_only) {
  std::vector<ProbeRequest> probes;
  {
    absl::MutexLock lock(&mu_);
    Entry& e = peers_[peer.peer_id];
    e = Entry();
    e.status.peer_id = peer.peer_id;
    e.status.incarnation = peer.incarnation;
    e.status.address = public_address;
    e.status.last_heartbeat = clock_->Now();
    e.retry = options_.first_retry;
    if (client_only || public_address.empty()) {
      e.status.reachability = Reachability::kClientOnly;
      return;
    }
    e.status.reachability = Reachability::kProbing;
    probes.push_back(BeginProbeLocked(&e));
  }
  Launch(probes);
}

PeerLiveness::ProbeRequest PeerLiveness::BeginProbeLocked(Entry* e) {
  e->probe_in_flight = true;
  ++probes_in_flight_;
  return {e->status.peer_id, e->status.incarnation, e->status.address};
}

void PeerLiveness::Launch(const std::vector<ProbeRequest>& probes) {
  for (const ProbeRequest& p : probes) {
    prober_->Probe(p.address, [this, id = p.peer_id, incarnation = p.incarnation](bool serving) {
      OnProbeDone(id, incarnation, serving);
    });
  }
}

void PeerLiveness::OnProbeDone(const std::string& peer_id, uint64_t incarnation, bool serving) {
  absl::MutexLock lock(&mu_);
  --probes_in_flight_;
  auto it = peers_.find(peer_id);
  if (it == peers_.end() || it->second.status.incarnation != incarnation) return;
  Entry& e = it->second;
  e.probe_in_flight = false;
  Reachability before = e.status.reachability;
  absl::Time now = clock_->Now();
  if (serving) {
    e.status.reachability = Reachability::kReachable;
    e.retry = options_.first_retry;
    e.next_probe = now + options_.reprobe_interval;
  } else {
    e.status.reachability = Reachability::kUnreachable;
    e.next_probe = now + e.retry;
    e.retry = std::min(e.retry * 2, options_.max_retry);
  }
  if (before != e.status.reachability) {
    LOG(INFO) << "peer " << peer_id << " at " << e.status.address << " is "
              << (serving ? "reachable" : "NOT reachable (not listed to others)");
  }
}

absl::Status PeerLiveness::Heartbeat(const PeerHandle& peer, double samples_per_second,
                                     std::optional<uint64_t> reported_step) {
  if (absl::Status s = ledger_->CheckPeer(peer); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  auto it = peers_.find(peer.peer_id);
  if (it == peers_.end() || it->second.status.incarnation != peer.incarnation) {
    return absl::NotFoundError("peer is not tracked: Join again");
  }
  it->second.status.last_heartbeat = clock_->Now();
  it->second.status.samples_per_second = samples_per_second;
  if (reported_step.has_value()) it->second.status.reported_step = *reported_step;
  return absl::OkStatus();
}

void PeerLiveness::Forget(const std::string& peer_id, std::optional<uint64_t> incarnation) {
  absl::MutexLock lock(&mu_);
  auto it = peers_.find(peer_id);
  if (it == peers_.end()) return;
  if (incarnation.has_value() && it->second.status.incarnation != *incarnation) return;
  peers_.erase(it);
}

std::vector<PeerHandle> PeerLiveness::Tick() {
  absl::Time now = clock_->Now();
  std::vector<PeerHandle> silent;
  std::vector<ProbeRequest> probes;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, e] : peers_) {
      if (now - e.status.last_heartbeat > options_.ttl) {
        silent.push_back({id, e.status.incarnation});
        continue;
      }
      if (e.status.reachability != Reachability::kClientOnly && !e.probe_in_flight &&
          now >= e.next_probe) {
        probes.push_back(BeginProbeLocked(&e));
      }
    }
  }
  Launch(probes);
  return silent;
}

std::vector<PeerStatus> PeerLiveness::Snapshot() const {
  absl::MutexLock lock(&mu_);
  std::vector<PeerStatus> out;
  for (const auto& [id, e] : peers_) out.push_back(e.status);
  return out;
}

void PeerLiveness::WaitForProbesForTest() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int* n) { return *n == 0; }, &probes_in_flight_));
}

}  // namespace dd::coordinator
