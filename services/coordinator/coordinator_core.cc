#include "services/coordinator/coordinator_core.h"

#include <glog/logging.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/rpc/auth.h"

namespace dd::coordinator {
namespace {

PeerHandle Handle(const v1::PeerRef& ref) { return {ref.peer_id(), ref.incarnation()}; }

v1::Lease ToProto(const LeaseInfo& l) {
  v1::Lease out;
  out.set_chunk_id(l.chunk_id);
  out.set_lease_id(l.lease_id);
  out.set_deadline_unix_ms(absl::ToUnixMillis(l.deadline));
  out.set_epoch(l.epoch);
  out.set_num_samples(l.num_samples);
  return out;
}

v1::Reachability ToProto(Reachability r) {
  switch (r) {
    case Reachability::kProbing: return v1::PROBING;
    case Reachability::kReachable: return v1::REACHABLE;
    case Reachability::kUnreachable: return v1::UNREACHABLE;
    case Reachability::kClientOnly: return v1::CLIENT_ONLY;
  }
  return v1::REACHABILITY_UNSPECIFIED;
}

}  // namespace

absl::Status ValidateHostPort(const std::string& address, const char* field) {
  auto bad = [&](const char* why) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " \"", address, "\" is not host:port (", why, ")"));
  };
  if (address.size() > 255) return bad("too long");
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad("no port");
  std::string host = address.substr(0, colon);
  if (host.front() == '[' ? host.back() != ']' : host.find(':') != std::string::npos) {
    return bad("IPv6 hosts go in brackets");
  }
  for (char c : host) {
    if (c <= ' ' || c == '/' || c == '@') return bad("invalid character in host");
  }
  int port = 0;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 1 || port > 65535) {
    return bad("port must be 1-65535");
  }
  return absl::OkStatus();
}

CoordinatorCore::CoordinatorCore(ChunkLedger* ledger, PeerLiveness* liveness,
                                 RoundPlanner* rounds, RunConfig config,
                                 CoordinatorOptions options, Clock* clock)
    : ledger_(ledger),
      liveness_(liveness),
      rounds_(rounds),
      membership_(ledger, liveness, rounds),
      config_(std::move(config)),
      options_(std::move(options)),
      clock_(clock) {}

absl::StatusOr<v1::JoinResponse> CoordinatorCore::Join(const v1::JoinRequest& request) {
  if (request.client_only()) {
    if (!request.public_address().empty()) {
      return absl::InvalidArgumentError("a client_only peer has no public_address");
    }
  } else {
    if (absl::Status s = ValidateHostPort(request.listen_address(), "listen_address"); !s.ok()) {
      return s;
    }
    if (!request.public_address().empty()) {
      if (absl::Status s = ValidateHostPort(request.public_address(), "public_address");
          !s.ok()) {
        return s;
      }
    }
  }
  if (request.display_name().size() > 128) {
    return absl::InvalidArgumentError("display_name is longer than 128 bytes");
  }
  PeerInfo info;
  info.display_name = request.display_name();
  info.listen_address = request.client_only() ? "" : request.listen_address();
  info.public_address = request.public_address();
  info.client_only = request.client_only();
  auto outcome = membership_.Join(request.peer_id(), info);
  if (!outcome.ok()) return outcome.status();
  std::string address = info.public_address.empty() ? info.listen_address : info.public_address;
  LOG(INFO) << "peer " << outcome->peer.peer_id << " incarnation " << outcome->peer.incarnation
            << " joined" << (info.client_only ? " (client only)" : " at " + address)
            << (outcome->released_chunks ? absl::StrCat("; released ", outcome->released_chunks,
                                                        " leases of its predecessors")
                                         : "");
  v1::JoinResponse response;
  response.set_peer_id(outcome->peer.peer_id);
  response.set_incarnation(outcome->peer.incarnation);
  response.set_run_id(config_.run_id);
  response.set_run_config_json(config_.json);
  response.set_heartbeat_ttl_ms(absl::ToInt64Milliseconds(options_.heartbeat_ttl));
  response.set_heartbeat_interval_ms(absl::ToInt64Milliseconds(options_.heartbeat_ttl / 4));
  response.set_lease_timeout_ms(absl::ToInt64Milliseconds(options_.lease_timeout));
  response.set_dataset_address(options_.dataset_address);
  return response;
}

absl::StatusOr<v1::HeartbeatResponse> CoordinatorCore::Heartbeat(
    const v1::HeartbeatRequest& request) {
  double rate = request.samples_per_second();
  if (!(rate >= 0 && rate < 1e9)) {
    return absl::InvalidArgumentError("samples_per_second must be finite and >= 0");
  }
  if (absl::Status s = liveness_->Heartbeat(Handle(request.peer()), rate); !s.ok()) return s;
  v1::HeartbeatResponse response;
  response.set_server_time_unix_ms(absl::ToUnixMillis(clock_->Now()));
  return response;
}

absl::StatusOr<v1::LeaveResponse> CoordinatorCore::Leave(const v1::LeaveRequest& request) {
  auto released = membership_.Remove(request.peer().peer_id(), request.peer().incarnation(),
                                     RemovalReason::kLeft);
  if (!released.ok()) return released.status();
  v1::LeaveResponse response;
  response.set_released_chunks(*released);
  return response;
}

absl::StatusOr<v1::AcquireChunksResponse> CoordinatorCore::AcquireChunks(
    const v1::AcquireChunksRequest& request) {
  if (request.max_chunks() == 0 || request.max_chunks() > kMaxChunksPerAcquire) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_chunks must be 1..", kMaxChunksPerAcquire));
  }
  auto leases = ledger_->Acquire(Handle(request.peer()), request.max_chunks(),
                                 options_.lease_timeout);
  if (!leases.ok()) return leases.status();
  v1::AcquireChunksResponse response;
  for (const auto& l : *leases) *response.add_leases() = ToProto(l);
  return response;
}

absl::StatusOr<v1::RenewLeasesResponse> CoordinatorCore::RenewLeases(
    const v1::RenewLeasesRequest& request) {
  if (request.lease_ids_size() > static_cast<int>(kMaxChunksPerAcquire)) {
    return absl::InvalidArgumentError("too many lease_ids");
  }
  std::vector<uint64_t> ids(request.lease_ids().begin(), request.lease_ids().end());
  auto result = ledger_->Renew(Handle(request.peer()), ids, options_.lease_timeout);
  if (!result.ok()) return result.status();
  v1::RenewLeasesResponse response;
  for (const auto& l : result->renewed) *response.add_renewed() = ToProto(l);
  for (uint64_t id : result->lost) response.add_lost(id);
  return response;
}

absl::StatusOr<v1::CompleteChunkResponse> CoordinatorCore::CompleteChunk(
    const v1::CompleteChunkRequest& request) {
  auto result = ledger_->Complete(Handle(request.peer()), request.chunk_id(), request.lease_id(),
                                  request.samples_trained());
  if (!result.ok()) return result.status();
  v1::CompleteChunkResponse response;
  response.set_duplicate(result->duplicate);
  response.set_times_trained(result->times_trained);
  return response;
}

absl::StatusOr<v1::ReleaseChunksResponse> CoordinatorCore::ReleaseChunks(
    const v1::ReleaseChunksRequest& request) {
  if (request.lease_ids_size() > static_cast<int>(kMaxChunksPerAcquire)) {
    return absl::InvalidArgumentError("too many lease_ids");
  }
  std::vector<uint64_t> ids(request.lease_ids().begin(), request.lease_ids().end());
  auto released = ledger_->Release(Handle(request.peer()), ids);
  if (!released.ok()) return released.status();
  v1::ReleaseChunksResponse response;
  response.set_released(*released);
  return response;
}

absl::StatusOr<v1::RunState> CoordinatorCore::GetRunState(const v1::GetRunStateRequest&) {
  LedgerStats stats = ledger_->Stats();
  v1::RunState state;
  state.set_run_id(config_.run_id);
  state.set_epoch(stats.epoch);
  state.set_num_chunks(stats.num_chunks);
  state.set_chunks_pending(stats.pending);
  state.set_chunks_leased(stats.leased);
  state.set_chunks_done(stats.done);
  state.set_samples_done(stats.samples_done);
  state.set_completions(stats.completions);
  double rate = 0;
  uint32_t live = 0;
  for (const auto& p : liveness_->Snapshot()) {
    ++live;
    rate += p.samples_per_second;
  }
  state.set_live_peers(live);
  state.set_samples_per_second(rate);
  state.set_dataset_manifest_sha256(ledger_->manifest_sha256());
  state.set_global_step(rounds_->global_step());
  return state;
}

absl::StatusOr<v1::ListChunksResponse> CoordinatorCore::ListChunks(
    const v1::ListChunksRequest& request) {
  if (request.page_size() > kMaxListPage) {
    return absl::InvalidArgumentError(absl::StrCat("page_size above ", kMaxListPage));
  }
  uint32_t page = request.page_size() == 0 ? 1000 : request.page_size();
  uint64_t start = 0;
  if (!request.page_token().empty() && !absl::SimpleAtoi(request.page_token(), &start)) {
    return absl::InvalidArgumentError("malformed page_token");
  }
  ChunkFilter filter;
  if (request.state() == v1::PENDING) filter.state = ChunkFilter::State::kPending;
  if (request.state() == v1::LEASED) filter.state = ChunkFilter::State::kLeased;
  filter.owner_peer_id = request.owner_peer_id();
  std::optional<uint64_t> next;
  v1::ListChunksResponse response;
  for (const auto& c : ledger_->ListChunks(start, page, filter, &next)) {
    v1::ChunkEntry* e = response.add_chunks();
    e->set_chunk_id(c.chunk_id());
    e->set_state(c.lease_id() ? v1::LEASED : v1::PENDING);
    e->set_times_trained(c.times_trained());
    e->set_owner_peer_id(c.owner_peer_id());
    e->set_owner_incarnation(c.owner_incarnation());
    e->set_deadline_unix_ms(c.deadline_unix_ms());
    e->set_samples_trained(c.samples_trained());
    e->set_num_samples(c.num_samples());
    e->set_lease_id(c.lease_id());
  }
  if (next.has_value()) response.set_next_page_token(absl::StrCat(*next));
  return response;
}

absl::StatusOr<v1::ListPeersResponse> CoordinatorCore::ListPeers(const v1::ListPeersRequest&) {
  std::map<std::string, internal::PeerRecord> records;
  for (auto& p : ledger_->ActivePeers()) records[p.peer_id()] = std::move(p);
  v1::ListPeersResponse response;
  for (const auto& s : liveness_->Snapshot()) {
    auto rec = records.find(s.peer_id);
    if (rec == records.end()) continue;  // evicted meanwhile
    v1::PeerEntry* e = response.add_peers();
    e->set_peer_id(s.peer_id);
    e->set_incarnation(s.incarnation);
    e->set_display_name(rec->second.display_name());
    e->set_reachability(ToProto(s.reachability));
    // Only an address that answered a health check is handed out.
    if (s.reachability == Reachability::kReachable) e->set_address(s.address);
    e->set_samples_per_second(s.samples_per_second);
    e->set_joined_unix_ms(rec->second.joined_unix_ms());
    e->set_last_heartbeat_unix_ms(absl::ToUnixMillis(s.last_heartbeat));
    e->set_leased_chunks(ledger_->LeasesHeldBy(s.peer_id));
  }
  return response;
}

absl::StatusOr<v1::ReportProgressResponse> CoordinatorCore::ReportProgress(
    const v1::ReportProgressRequest& request) {
  PeerHandle peer = Handle(request.peer());
  if (absl::Status s = ledger_->CheckPeer(peer); !s.ok()) return s;
  const std::string& hash = request.params_hash();
  if (hash.size() > 64 || hash.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return absl::InvalidArgumentError("params_hash must be lowercase hex of at most 64 characters");
  }
  // Only addresses that answered a health check get a span to reduce.
  std::map<std::string, std::string> reachable;
  for (const auto& p : liveness_->Snapshot()) {
    if (p.reachability == Reachability::kReachable) reachable[p.peer_id] = p.address;
  }
  auto response = rounds_->Report(
      peer.peer_id, request.global_step(), request.samples_accumulated(),
      request.samples_per_second(), request.bandwidth_mbps(), [&](const std::string& id) {
        auto it = reachable.find(id);
        return MemberInfo{it == reachable.end() ? "" : it->second};
      });
  if (!response.ok()) return response;
  auto round = rounds_->RoundFor(peer.peer_id, request.after_round_id());
  if (round.has_value()) *response->mutable_round() = std::move(*round);
  if (!request.params_hash().empty()) {
    HashVote::Verdict verdict =
        rounds_->JudgeHash(peer.peer_id, request.hash_step(), request.params_hash());
    if (verdict.diverged) {
      LOG(WARNING) << "peer " << peer.peer_id << " holds parameters " << request.params_hash()
                   << " after global step " << request.hash_step() << ", the others "
                   << verdict.consensus << ": it must resynchronise";
      response->set_diverged(true);
      response->set_consensus_hash(verdict.consensus);
    }
  }
  return response;
}

absl::StatusOr<v1::GetRoundResponse> CoordinatorCore::GetRound(const v1::GetRoundRequest& request) {
  if (absl::Status s = ledger_->CheckPeer(Handle(request.peer())); !s.ok()) return s;
  v1::GetRoundResponse response;
  auto round = rounds_->RoundFor(request.peer().peer_id(), request.after_round_id());
  if (round.has_value()) {
    response.set_found(true);
    *response.mutable_round() = std::move(*round);
  }
  return response;
}

absl::StatusOr<v1::ListRoundsResponse> CoordinatorCore::ListRounds(const v1::ListRoundsRequest&) {
  v1::ListRoundsResponse response;
  for (auto& r : rounds_->Recent()) *response.add_rounds() = std::move(r);
  response.set_global_step(rounds_->global_step());
  return response;
}

absl::Status CoordinatorCore::CheckAdmin(const std::string& token) const {
  if (options_.admin_token.empty()) {
    return absl::PermissionDeniedError("admin calls are disabled (no --admin_token_file)");
  }
  if (!ConstantTimeEquals(token, options_.admin_token)) {
    return absl::PermissionDeniedError("missing or wrong x-dd-admin-token");
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::AdminReleaseChunkResponse> CoordinatorCore::AdminReleaseChunk(
    const v1::AdminReleaseChunkRequest& request, const std::string& admin_token) {
  if (absl::Status s = CheckAdmin(admin_token); !s.ok()) return s;
  auto was = ledger_->AdminRelease(request.chunk_id());
  if (!was.ok()) return was.status();
  LOG(INFO) << "admin released chunk " << request.chunk_id();
  v1::AdminReleaseChunkResponse response;
  response.set_was_leased(*was);
  return response;
}

absl::StatusOr<v1::AdminEvictPeerResponse> CoordinatorCore::AdminEvictPeer(
    const v1::AdminEvictPeerRequest& request, const std::string& admin_token) {
  if (absl::Status s = CheckAdmin(admin_token); !s.ok()) return s;
  auto released =
      membership_.Remove(request.peer_id(), std::nullopt, RemovalReason::kEvictedByAdmin);
  if (!released.ok()) return released.status();
  v1::AdminEvictPeerResponse response;
  response.set_released_chunks(*released);
  return response;
}

void CoordinatorCore::Tick() {
  auto expired = ledger_->ExpireDue();
  if (!expired.ok()) {
    LOG(ERROR) << "expiring leases: " << expired.status();
  } else if (*expired > 0) {
    LOG(INFO) << *expired << " leases expired and returned to the pool";
  }
  membership_.Tick();
}

}  // namespace dd::coordinator
