#include "services/coordinator/coordinator_core.h"

#include <glog/logging.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/rpc/auth.h"
#include "common/rpc/ip_address.h"
#include "common/status/status_macros.h"

namespace dd::coordinator {
namespace {

// A peer's reported training rate: finite, >= 0 and below 1e9 samples/s.
absl::Status CheckRate(double samples_per_second) {
  if (!(samples_per_second >= 0 && samples_per_second < 1e9)) {
    return absl::InvalidArgumentError("samples_per_second must be finite and >= 0");
  }
  return absl::OkStatus();
}

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

absl::Status CheckAddressIsCallers(const std::string& address, const std::string& remote_ip) {
  if (remote_ip.empty()) return absl::OkStatus();
  auto named = ParseIp(HostOf(address));
  if (!named.has_value()) return absl::OkStatus();  // a host name
  auto from = ParseIp(remote_ip);
  if (!from.has_value() || *named == *from || (named->IsLoopback() && from->IsLoopback())) {
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat(
      "address ", address, " is not the address this call came from (", remote_ip,
      "); a peer can only register itself (use a host name that resolves to it, or join from "
      "that address)"));
}

CoordinatorCore::CoordinatorCore(ChunkLedger* ledger, PeerLiveness* liveness,
                                 RoundPlanner* rounds, RunConfig config,
                                 CoordinatorOptions options, Clock* clock,
                                 const CredentialIssuer* issuer, RunRecords records)
    : issuer_(issuer),
      records_(records),
      ledger_(ledger),
      liveness_(liveness),
      rounds_(rounds),
      membership_(ledger, liveness, rounds),
      config_(std::move(config)),
      options_(std::move(options)),
      clock_(clock),
      join_limiter_(options_.join_burst, options_.join_interval, clock),
      peer_call_limiter_(options_.peer_call_burst, options_.peer_call_interval, clock) {
  if (issuer_ != nullptr) {
    auto verifier = CredentialVerifier::FromPublicKey(issuer_->public_key());
    CHECK(verifier.ok()) << verifier.status();  // the issuer's own key
    verifier_ = *verifier;
  }
}

absl::StatusOr<PeerHandle> CoordinatorCore::ActingPeer(const Caller& caller,
                                                       const v1::PeerRef& named) const {
  switch (caller.role) {
    case Caller::Role::kUnchecked:
      return Handle(named);
    case Caller::Role::kRunToken:
    case Caller::Role::kInvitation:
      return absl::PermissionDeniedError(
          "peer calls need the peer credential that Join returned; the run token or an "
          "invitation acts for no peer");
    case Caller::Role::kPeer:
      break;
  }
  // One identity cannot keep the worker pool to itself.
  if (!peer_call_limiter_.Take(caller.peer_id)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "peer ", caller.peer_id, " calls more often than ", options_.peer_call_burst, " at once and one per ",
        absl::FormatDuration(options_.peer_call_interval), "; slow down"));
  }
  if (!named.peer_id().empty() && named.peer_id() != caller.peer_id) {
    return absl::PermissionDeniedError(absl::StrCat("the credential of peer ", caller.peer_id,
                                                    " cannot act for peer ", named.peer_id()));
  }
  if (named.incarnation() != 0 && named.incarnation() != caller.incarnation) {
    return absl::PermissionDeniedError(absl::StrCat(
        "the credential names incarnation ", caller.incarnation, ", the request ",
        named.incarnation()));
  }
  return PeerHandle{caller.peer_id, caller.incarnation};
}

absl::StatusOr<std::string> CoordinatorCore::IssueCredential(const PeerHandle& peer,
                                                             absl::Time* expires) const {
  if (issuer_ == nullptr) return std::string();
  *expires = clock_->Now() + options_.credential_ttl;
  return issuer_->Issue(PeerClaims{peer.peer_id, peer.incarnation, config_.run_id, *expires});
}

std::string CoordinatorCore::InvitationKey(const std::string& name) {
  return absl::StrCat(kInvitationPrefix, name);
}

absl::Status CoordinatorCore::CheckNotBanned(const std::string& peer_id) {
  absl::MutexLock lock(&ban_mu_);
  auto it = banned_until_.find(peer_id);
  if (it == banned_until_.end()) return absl::OkStatus();
  if (it->second <= clock_->Now()) {
    banned_until_.erase(it);
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat("peer ", peer_id, " is banned until ",
                                                  absl::FormatTime(it->second)));
}

absl::Status CoordinatorCore::CheckAddressFree(const std::string& address,
                                               const std::string& joining_id) const {
  if (address.empty()) return absl::OkStatus();
  absl::Time now = clock_->Now();
  absl::Duration quiet = options_.heartbeat_ttl / 2;
  for (const auto& p : liveness_->Snapshot()) {
    if (p.address != address || p.peer_id == joining_id) continue;
    if (now - p.last_heartbeat < quiet) {
      return absl::AlreadyExistsError(absl::StrCat(
          "address ", address, " is registered to live peer ", p.peer_id,
          " (heartbeat ", absl::FormatDuration(now - p.last_heartbeat),
          " ago); a restarted process takes it over once the old one has been silent for ",
          absl::FormatDuration(quiet)));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::JoinResponse> CoordinatorCore::Join(const v1::JoinRequest& request,
                                                       const Caller& caller) {
  // Who may take which id: a peer's own credential rejoins as that peer; the
  // run token joins as a new peer, or rejoins with proof of the old id.
  std::string requested_id = request.peer_id();
  if (caller.is_peer()) {
    if (!requested_id.empty() && requested_id != caller.peer_id) {
      return absl::PermissionDeniedError(absl::StrCat(
          "the credential of peer ", caller.peer_id, " cannot join as ", requested_id));
    }
    requested_id = caller.peer_id;
  } else if ((caller.role == Caller::Role::kRunToken ||
              caller.role == Caller::Role::kInvitation) &&
             !requested_id.empty()) {
    if (verifier_ == nullptr) {
      return absl::PermissionDeniedError("this coordinator issues no credentials");
    }
    auto proof = verifier_->Verify(request.peer_token(), clock_->Now(), options_.rejoin_grace);
    if (!proof.ok() || proof->peer_id != requested_id) {
      return absl::PermissionDeniedError(absl::StrCat(
          "rejoining as ", requested_id, " needs a credential issued to it in peer_token",
          proof.ok() ? "" : absl::StrCat(" (", proof.status().message(), ")")));
    }
  }
  if (!requested_id.empty()) {
    if (absl::Status s = CheckNotBanned(requested_id); !s.ok()) return s;
  }
  if (caller.role == Caller::Role::kInvitation) {
    if (absl::Status s = CheckNotBanned(InvitationKey(caller.peer_id)); !s.ok()) return s;
  }
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
  if (absl::Status s = TakeJoinToken(caller.remote_ip); !s.ok()) return s;
  if (request.display_name().size() > 128) {
    return absl::InvalidArgumentError("display_name is longer than 128 bytes");
  }
  PeerInfo info;
  info.display_name = request.display_name();
  info.listen_address = request.client_only() ? "" : request.listen_address();
  info.public_address = request.public_address();
  info.client_only = request.client_only();
  const std::string effective_address =
      info.public_address.empty() ? info.listen_address : info.public_address;
  if (options_.check_peer_addresses && !info.client_only) {
    if (absl::Status s = CheckAddressIsCallers(effective_address, caller.remote_ip); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = CheckAddressFree(effective_address, requested_id); !s.ok()) return s;
  auto outcome = membership_.Join(requested_id, info);
  if (!outcome.ok()) return outcome.status();
  ForgetPeerRecords(outcome->peer.peer_id);  // a new incarnation starts with what it leases
  {
    // Which invitation brought each peer in, so evicting the peer bans it.
    absl::MutexLock lock(&ban_mu_);
    if (caller.role == Caller::Role::kInvitation) {
      invited_by_[outcome->peer.peer_id] = caller.peer_id;
    }
  }
  LOG(INFO) << "peer " << outcome->peer.peer_id << " incarnation " << outcome->peer.incarnation
            << " joined" << (info.client_only ? " (client only)" : " at " + effective_address)
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
  absl::Time expires;
  auto credential = IssueCredential(outcome->peer, &expires);
  if (!credential.ok()) return credential.status();
  if (!credential->empty()) {
    response.set_peer_token(*credential);
    response.set_peer_token_expires_unix_ms(absl::ToUnixMillis(expires));
    response.set_credential_public_key(issuer_->public_key());
  }
  return response;
}

absl::StatusOr<v1::HeartbeatResponse> CoordinatorCore::Heartbeat(
    const v1::HeartbeatRequest& request, const Caller& caller) {
  ASSIGN_OR_RETURN(PeerHandle peer, ActingPeer(caller, request.peer()));
  RETURN_IF_ERROR(CheckRate(request.samples_per_second()));
  if (absl::Status s = liveness_->Heartbeat(peer, request.samples_per_second()); !s.ok()) return s;
  v1::HeartbeatResponse response;
  response.set_server_time_unix_ms(absl::ToUnixMillis(clock_->Now()));
  if (caller.is_peer()) {
    absl::Time expires;
    ASSIGN_OR_RETURN(std::string credential, IssueCredential(peer, &expires));
    response.set_peer_token(credential);
    response.set_peer_token_expires_unix_ms(absl::ToUnixMillis(expires));
  }
  return response;
}

absl::StatusOr<v1::LeaveResponse> CoordinatorCore::Leave(const v1::LeaveRequest& request,
                                                         const Caller& caller) {
  ASSIGN_OR_RETURN(PeerHandle peer, ActingPeer(caller, request.peer()));
  auto released = membership_.Remove(peer.peer_id, peer.incarnation, RemovalReason::kLeft);
  if (released.ok()) ForgetPeerRecords(peer.peer_id);
  if (!released.ok()) return released.status();
  v1::LeaveResponse response;
  response.set_released_chunks(*released);
  return response;
}

absl::StatusOr<v1::AcquireChunksResponse> CoordinatorCore::AcquireChunks(
    const v1::AcquireChunksRequest& request, const Caller& caller) {
  ASSIGN_OR_RETURN(PeerHandle peer, ActingPeer(caller, request.peer()));
  if (request.max_chunks() == 0 || request.max_chunks() > kMaxChunksPerAcquire) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_chunks must be 1..", kMaxChunksPerAcquire));
  }
  auto leases = ledger_->Acquire(peer, request.max_chunks(),
                                 options_.lease_timeout);
  if (!leases.ok()) return leases.status();
  v1::AcquireChunksResponse response;
  for (const auto& l : *leases) *response.add_leases() = ToProto(l);
  return response;
}

absl::StatusOr<v1::RenewLeasesResponse> CoordinatorCore::RenewLeases(
    const v1::RenewLeasesRequest& request, const Caller& caller) {
  ASSIGN_OR_RETURN(PeerHandle peer, ActingPeer(caller, request.peer()));
  if (request.lease_ids_size() > static_cast<int>(kMaxChunksPerAcquire)) {
    return absl::InvalidArgumentError("too many lease_ids");
  }
  std::vector<uint64_t> ids(request.lease_ids().begin(), request.lease_ids().end());
  auto result = ledger_->Renew(peer, ids, options_.lease_timeout);
  if (!result.ok()) return result.status();
  v1::RenewLeasesResponse response;
  for (const auto& l : result->renewed) *response.add_renewed() = ToProto(l);
  for (uint64_t id : result->lost) response.add_lost(id);
  return response;
}

absl::StatusOr<v1::CompleteChunkResponse> CoordinatorCore::CompleteChunk(
    const v1::CompleteChunkRequest& request, const Caller& caller) {
  ASSIGN_OR_RETURN(PeerHandle peer, ActingPeer(caller, request.peer()));
  auto result = ledger_->Complete(peer, request.chunk_id(), request.lease_id(),
                                  request.samples_trained());
  if (!result.ok()) return result.status();
  if (!result->duplicate) {
    absl::MutexLock lock(&peer_records_mu_);
    completed_samples_[peer.peer_id] += request.samples_trained();
  }
  v1::CompleteChunkResponse response;
  response.set_duplicate(result->duplicate);
  response.set_times_trained(result->times_trained);
  response.set_returned_untrained(result->returned_untrained);
  if (result->marked_bad) {
    LOG(WARNING) << "chunk " << request.chunk_id() << " was completed with 0 samples "
                 << kFailuresBeforeBad << " times in a row: marked bad and counted";
  }
  return response;
}

absl::StatusOr<v1::ReleaseChunksResponse> CoordinatorCore::ReleaseChunks(
    const v1::ReleaseChunksRequest& request, const Caller& caller) {
  ASSIGN_OR_RETURN(PeerHandle peer, ActingPeer(caller, request.peer()));
  if (request.lease_ids_size() > static_cast<int>(kMaxChunksPerAcquire)) {
    return absl::InvalidArgumentError("too many lease_ids");
  }
  std::vector<uint64_t> ids(request.lease_ids().begin(), request.lease_ids().end());
  auto released = ledger_->Release(peer, ids);
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
    const v1::ListChunksRequest& request, const Caller& caller, const std::string& admin_token) {
  // Lease ids and incarnations are what peer calls name: only admins see them.
  const bool full = caller.role == Caller::Role::kUnchecked || CheckAdmin(admin_token).ok();
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
    if (full) e->set_owner_incarnation(c.owner_incarnation());
    e->set_deadline_unix_ms(c.deadline_unix_ms());
    e->set_samples_trained(c.samples_trained());
    e->set_num_samples(c.num_samples());
    if (full) e->set_lease_id(c.lease_id());
    e->set_failed_completions(c.failed_completions());
    e->set_bad(c.bad());
  }
  if (next.has_value()) response.set_next_page_token(absl::StrCat(*next));
  return response;
}

absl::StatusOr<v1::ListPeersResponse> CoordinatorCore::ListPeers(const v1::ListPeersRequest&,
                                                                 const Caller& caller,
                                                                 const std::string& admin_token) {
  const bool full = caller.role == Caller::Role::kUnchecked || CheckAdmin(admin_token).ok();
  std::map<std::string, internal::PeerRecord> records;
  for (auto& p : ledger_->ActivePeers()) records[p.peer_id()] = std::move(p);
  v1::ListPeersResponse response;
  for (const auto& s : liveness_->Snapshot()) {
    auto rec = records.find(s.peer_id);
    if (rec == records.end()) continue;  // evicted meanwhile
    v1::PeerEntry* e = response.add_peers();
    e->set_peer_id(s.peer_id);
    if (full) e->set_incarnation(s.incarnation);
    e->set_display_name(rec->second.display_name());
    e->set_reachability(ToProto(s.reachability));
    // Only an address that answered a health check is handed out.
    if (s.reachability == Reachability::kReachable) e->set_address(s.address);
    e->set_samples_per_second(s.samples_per_second);
    e->set_joined_unix_ms(rec->second.joined_unix_ms());
    e->set_last_heartbeat_unix_ms(absl::ToUnixMillis(s.last_heartbeat));
    e->set_leased_chunks(ledger_->LeasesHeldBy(s.peer_id));
    e->set_global_step(s.reported_step);
  }
  return response;
}

absl::StatusOr<v1::ReportProgressResponse> CoordinatorCore::ReportProgress(
    const v1::ReportProgressRequest& request, const Caller& caller) {
  ASSIGN_OR_RETURN(PeerHandle peer, ActingPeer(caller, request.peer()));
  if (absl::Status s = ledger_->CheckPeer(peer); !s.ok()) return s;
  const std::string& hash = request.params_hash();
  if (hash.size() > 64 || hash.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return absl::InvalidArgumentError("params_hash must be lowercase hex of at most 64 characters");
  }
  // A peer cannot have trained more samples than its data holds: what it
  // leases now plus what it completed. (Without the bound one peer could
  // report the whole target batch and open rounds at will.)
  if (caller.is_peer()) {
    uint64_t bound = ledger_->SamplesLeasedBy(peer.peer_id);
    {
      absl::MutexLock lock(&peer_records_mu_);
      auto it = completed_samples_.find(peer.peer_id);
      if (it != completed_samples_.end()) bound += it->second;
    }
    if (request.samples_accumulated() > bound) {
      return absl::InvalidArgumentError(absl::StrCat(
          "samples_accumulated ", request.samples_accumulated(),
          " exceeds the samples of the chunks this peer leased and completed (", bound, ")"));
    }
  }
  // A report is a sign of life too, with a fresher rate than the last
  // heartbeat's (the status page and samples/s show it).
  RETURN_IF_ERROR(CheckRate(request.samples_per_second()));
  if (absl::Status s =
          liveness_->Heartbeat(peer, request.samples_per_second(), request.global_step());
      !s.ok()) {
    return s;
  }
  // How its recent rounds ended for it (a round aged out of the planner's
  // record is no error: the peer may have been away).
  if (request.round_results_size() > 16) {
    return absl::InvalidArgumentError("at most 16 round_results per report");
  }
  for (const v1::RoundResult& r : request.round_results()) {
    absl::Status s =
        rounds_->RecordResult(peer.peer_id, r.round_id(), r.applied(), r.averaging_seconds());
    if (!s.ok() && !absl::IsNotFound(s)) return s;
  }
  // The numbers of the newest step the peer applied, for the run's history:
  // only steps the collaboration has taken, only plausible values.
  if (request.has_telemetry() && records_.history != nullptr) {
    if (request.telemetry().step() > rounds_->global_step()) {
      return absl::InvalidArgumentError(absl::StrCat("telemetry for step ",
                                                     request.telemetry().step(),
                                                     ", beyond the run's ", rounds_->global_step()));
    }
    RETURN_IF_ERROR(records_.history->Report(peer.peer_id, request.telemetry(), clock_->Now()));
  }
  // Only addresses that answered a health check get a span to reduce.
  std::map<std::string, std::string> reachable;
  for (const auto& p : liveness_->Snapshot()) {
    if (p.reachability == Reachability::kReachable) reachable[p.peer_id] = p.address;
  }
  // The hash first: an outvoted peer's samples open no round.
  HashVote::Verdict verdict;
  if (!request.params_hash().empty()) {
    verdict = rounds_->JudgeHash(peer.peer_id, request.hash_step(), request.params_hash());
  }
  absl::StatusOr<v1::ReportProgressResponse> response;
  if (request.finished() || verdict.diverged) {
    response.emplace().set_global_step(rounds_->global_step());
  } else {
    response = rounds_->Report(
        peer.peer_id, request.global_step(), request.samples_accumulated(),
        request.samples_per_second(), request.bandwidth_mbps(), [&](const std::string& id) {
          auto it = reachable.find(id);
          return MemberInfo{it == reachable.end() ? "" : it->second};
        });
  }
  if (!response.ok()) return response;
  auto round = rounds_->RoundFor(peer.peer_id, request.after_round_id());
  if (round.has_value()) *response->mutable_round() = std::move(*round);
  if (verdict.diverged) {
    LOG(WARNING) << "peer " << peer.peer_id << " holds parameters " << request.params_hash()
                 << " after global step " << request.hash_step() << ", the others "
                 << verdict.consensus << ": it must resynchronise";
    response->set_diverged(true);
    response->set_consensus_hash(verdict.consensus);
    diverged_reports_.fetch_add(1, std::memory_order_relaxed);
  }
  return response;
}

absl::StatusOr<v1::GetRoundResponse> CoordinatorCore::GetRound(const v1::GetRoundRequest& request,
                                                               const Caller& caller) {
  ASSIGN_OR_RETURN(PeerHandle peer, ActingPeer(caller, request.peer()));
  if (absl::Status s = ledger_->CheckPeer(peer); !s.ok()) return s;
  v1::GetRoundResponse response;
  auto round = rounds_->RoundFor(peer.peer_id, request.after_round_id());
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

absl::StatusOr<v1::GetStepHashResponse> CoordinatorCore::GetStepHash(
    const v1::GetStepHashRequest& request) {
  return rounds_->ConfirmedHash(request.step());
}

absl::StatusOr<v1::ReportAuditsResponse> CoordinatorCore::ReportAudits(
    const v1::ReportAuditsRequest& request, const Caller& caller) {
  ASSIGN_OR_RETURN(PeerHandle peer, ActingPeer(caller, request.peer()));
  if (absl::Status s = ledger_->CheckPeer(peer); !s.ok()) return s;
  if (request.reports_size() > 64) {
    return absl::InvalidArgumentError("at most 64 verdicts per call");
  }
  std::vector<v1::AuditReport> reports(request.reports().begin(), request.reports().end());
  ASSIGN_OR_RETURN(AuditStatus status,
                   rounds_->RecordAudits(peer.peer_id, request.round_id(), reports));
  for (const v1::AuditReport& r : reports) {
    audit_verdicts_[r.verdict()].fetch_add(1, std::memory_order_relaxed);
  }
  // Two different auditors must find a reducer dishonest before it is
  // banned: one auditor alone cannot get an honest member banned.
  const absl::Time now = clock_->Now();
  for (const auto& [reducer, auditor] : status.accusations) {
    LOG(WARNING) << "round " << request.round_id() << ": peer " << auditor << " found reducer "
                 << reducer << " dishonest";
    size_t accusers = 0;
    {
      absl::MutexLock lock(&ban_mu_);
      auto& by_auditor = accusations_[reducer];
      by_auditor[auditor] = now;
      absl::erase_if(by_auditor,
                     [&](const auto& e) { return now - e.second > options_.eviction_ban; });
      accusers = by_auditor.size();
      if (accusers >= 2) accusations_.erase(reducer);
    }
    if (accusers >= 2) {
      auto evicted = EvictAndBan(reducer, options_.eviction_ban,
                                 "found dishonest by two auditors of its reductions",
                                 /*even_if_gone=*/true);
      if (evicted.ok()) reducers_banned_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  v1::ReportAuditsResponse response;
  response.set_audits_pending(status.pending);
  response.set_audit_failed(status.failed);
  for (uint32_t span : status.failed_spans) response.add_failed_spans(span);
  return response;
}

uint64_t CoordinatorCore::audit_verdicts(v1::AuditVerdict verdict) const {
  const int i = static_cast<int>(verdict);
  return i >= 0 && i < static_cast<int>(audit_verdicts_.size()) ? audit_verdicts_[i].load() : 0;
}

absl::StatusOr<v1::UploadSampleResponse> CoordinatorCore::UploadSample(
    const v1::UploadSampleRequest& request, const Caller& caller) {
  ASSIGN_OR_RETURN(PeerHandle peer, ActingPeer(caller, request.peer()));
  if (absl::Status s = ledger_->CheckPeer(peer); !s.ok()) return s;
  if (records_.newest_sample == nullptr) {
    return absl::FailedPreconditionError("this coordinator keeps no sample grids");
  }
  if (request.step() > rounds_->global_step()) {
    return absl::InvalidArgumentError(absl::StrCat("a sample grid for step ", request.step(),
                                                   ", beyond the run's ",
                                                   rounds_->global_step()));
  }
  const absl::Time now = clock_->Now();
  {
    // Decoding costs the coordinator: one grid per peer per interval.
    absl::MutexLock lock(&peer_records_mu_);
    auto [it, first] = last_sample_upload_.try_emplace(peer.peer_id, now);
    if (!first) {
      if (now - it->second < kSampleUploadInterval) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "one sample grid per ", absl::FormatDuration(kSampleUploadInterval), " per peer"));
      }
      it->second = now;
    }
  }
  ASSIGN_OR_RETURN(bool kept,
                   records_.newest_sample->Offer(request.step(), peer.peer_id, request.png(), now));
  v1::UploadSampleResponse response;
  response.set_kept(kept);
  return response;
}

absl::StatusOr<v1::GetHistoryResponse> CoordinatorCore::GetHistory(
    const v1::GetHistoryRequest& request) {
  if (request.max_points() > 100000) {
    return absl::InvalidArgumentError("max_points must be at most 100000");
  }
  v1::GetHistoryResponse response;
  if (records_.history == nullptr) return response;
  for (auto& p : records_.history->Points(request.since_step(),
                                  request.max_points() == 0 ? 1000 : request.max_points())) {
    *response.add_points() = std::move(p);
  }
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

absl::StatusOr<uint32_t> CoordinatorCore::EvictAndBan(const std::string& peer_id,
                                                      absl::Duration ban, const std::string& why,
                                                      bool even_if_gone) {
  auto released = membership_.Remove(peer_id, std::nullopt, RemovalReason::kEvictedByAdmin);
  if (!released.ok() && !(even_if_gone && absl::IsNotFound(released.status()))) {
    return released.status();
  }
  ForgetPeerRecords(peer_id);
  std::string invitation;
  {
    absl::MutexLock lock(&ban_mu_);
    banned_until_[peer_id] = clock_->Now() + ban;
    if (auto it = invited_by_.find(peer_id); it != invited_by_.end()) {
      invitation = it->second;
      banned_until_[InvitationKey(invitation)] = clock_->Now() + ban;
      invited_by_.erase(it);
    }
  }
  LOG(WARNING) << "peer " << peer_id << " banned for " << absl::FormatDuration(ban) << " (" << why
               << ")"
               << (invitation.empty() ? "" : absl::StrCat(", with its invitation \"", invitation, "\""));
  return released.ok() ? *released : 0;
}

absl::StatusOr<v1::AdminEvictPeerResponse> CoordinatorCore::AdminEvictPeer(
    const v1::AdminEvictPeerRequest& request, const std::string& admin_token) {
  if (absl::Status s = CheckAdmin(admin_token); !s.ok()) return s;
  absl::Duration ban = request.ban_seconds() > 0 ? absl::Seconds(request.ban_seconds())
                                                 : options_.eviction_ban;
  ASSIGN_OR_RETURN(uint32_t released, EvictAndBan(request.peer_id(), ban, "evicted by an admin"));
  v1::AdminEvictPeerResponse response;
  response.set_released_chunks(released);
  return response;
}

absl::StatusOr<v1::AdminInviteResponse> CoordinatorCore::AdminInvite(
    const v1::AdminInviteRequest& request, const std::string& admin_token) {
  if (absl::Status s = CheckAdmin(admin_token); !s.ok()) return s;
  const std::string& name = request.name();
  if (name.empty() || name.size() > 64 ||
      name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") !=
          std::string::npos) {
    return absl::InvalidArgumentError("an invitation's name is 1-64 of [A-Za-z0-9._-]");
  }
  if (issuer_ == nullptr) return absl::FailedPreconditionError("this coordinator issues no credentials");
  absl::Time expires = clock_->Now() + (request.ttl_seconds() > 0
                                            ? absl::Seconds(request.ttl_seconds())
                                            : absl::Hours(24 * 30));
  ASSIGN_OR_RETURN(std::string invitation,
                   issuer_->Issue(PeerClaims{absl::StrCat(kInvitationPrefix, name), 0,
                                             config_.run_id, expires}));
  LOG(INFO) << "invitation \"" << name << "\" issued, valid until " << absl::FormatTime(expires);
  v1::AdminInviteResponse response;
  response.set_invitation(invitation);
  response.set_expires_unix_ms(absl::ToUnixMillis(expires));
  return response;
}

void CoordinatorCore::Tick() {
  auto expired = ledger_->ExpireDue();
  if (!expired.ok()) {
    LOG(ERROR) << "expiring leases: " << expired.status();
  } else if (*expired > 0) {
    LOG(INFO) << *expired << " leases expired and returned to the pool";
  }
  for (const std::string& evicted : membership_.Tick()) ForgetPeerRecords(evicted);
  CollectGarbage();
}

absl::Status CoordinatorCore::TakeJoinToken(const std::string& remote_ip) {
  if (remote_ip.empty()) return absl::OkStatus();
  auto ip = ParseIp(remote_ip);
  if (ip.has_value() && ip->IsLoopback() && !options_.limit_loopback_joins) {
    return absl::OkStatus();
  }
  if (!join_limiter_.Take(remote_ip)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many joins from ", remote_ip, "; one per ",
        absl::FormatDuration(options_.join_interval), " after a burst of ", options_.join_burst));
  }
  return absl::OkStatus();
}

void CoordinatorCore::CollectGarbage() {
  const absl::Time now = clock_->Now();
  {
    absl::MutexLock lock(&ban_mu_);
    if (now - last_collection_ < absl::Minutes(1)) return;
    last_collection_ = now;
    absl::erase_if(banned_until_, [&](const auto& entry) { return entry.second <= now; });
    for (auto& [reducer, by_auditor] : accusations_) {
      absl::erase_if(by_auditor,
                     [&](const auto& e) { return now - e.second > options_.eviction_ban; });
    }
    absl::erase_if(accusations_, [](const auto& entry) { return entry.second.empty(); });
    // A full bucket is the same as none.
  }
  join_limiter_.Collect();
  peer_call_limiter_.Collect();
  auto forgotten = ledger_->ForgetInactivePeers(now - options_.forget_peers_after);
  if (!forgotten.ok()) {
    LOG(ERROR) << "forgetting departed peers: " << forgotten.status();
  } else if (*forgotten > 0) {
    LOG(INFO) << "forgot " << *forgotten << " peers gone for more than "
              << absl::FormatDuration(options_.forget_peers_after);
  }
}

void CoordinatorCore::ForgetPeerRecords(const std::string& peer_id) {
  absl::MutexLock lock(&peer_records_mu_);
  completed_samples_.erase(peer_id);
  last_sample_upload_.erase(peer_id);
}

}  // namespace dd::coordinator
