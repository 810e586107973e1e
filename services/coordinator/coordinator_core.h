// CoordinatorCore: the logic behind distdiff.coordinator.v1.Coordinator,
// written with protobuf messages but no gRPC types, so tests drive it
// directly; CoordinatorService is a thin adapter. Error codes per RPC are
// documented in protos/coordinator.proto.
#ifndef SERVICES_COORDINATOR_COORDINATOR_CORE_H_
#define SERVICES_COORDINATOR_COORDINATOR_CORE_H_

#include <array>
#include <atomic>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/crypto/peer_credential.h"
#include "common/rpc/caller.h"
#include "common/rpc/rate_limiter.h"
#include "common/time/clock.h"
#include "protos/coordinator.pb.h"
#include "services/coordinator/history/newest_sample.h"
#include "services/coordinator/history/run_history.h"
#include "services/coordinator/ledger/chunk_ledger.h"
#include "services/coordinator/registry/membership.h"
#include "services/coordinator/registry/peer_liveness.h"
#include "services/coordinator/rounds/round_planner.h"
#include "services/coordinator/run_config.h"

namespace dd::coordinator {

namespace v1 = ::distdiff::coordinator::v1;

inline constexpr uint32_t kMaxChunksPerAcquire = 1024;
inline constexpr uint32_t kMaxListPage = 10000;

struct CoordinatorOptions {
  absl::Duration lease_timeout = absl::Minutes(20);
  absl::Duration heartbeat_ttl = absl::Seconds(60);
  std::string dataset_address;
  // Empty: the Admin* calls are disabled (PERMISSION_DENIED).
  std::string admin_token;
  // Lifetime of a peer credential; heartbeats renew it.
  absl::Duration credential_ttl = absl::Hours(1);
  // How long an admin eviction bans the peer id (AdminEvictPeer's default).
  absl::Duration eviction_ban = absl::Hours(1);
  // How long a rejoin may prove its identity with an expired credential.
  absl::Duration rejoin_grace = absl::Hours(24);
  // A joining peer may only name an IP address it calls from (host names
  // are not resolved, so they pass): otherwise any token holder could make
  // the coordinator probe any host:port and learn the answer from ListPeers.
  bool check_peer_addresses = true;
  // Records of peers gone longer than this are deleted (their ids can no
  // longer be rejoined).
  absl::Duration forget_peers_after = absl::Hours(24);
  // Joins per remote IP address: a burst of this many, then one per
  // join_interval. A flood of Joins gets RESOURCE_EXHAUSTED instead of a
  // peer record each.
  int join_burst = 20;
  absl::Duration join_interval = absl::Seconds(3);
  // Loopback callers are not limited unless this says so: a local run's
  // trainers and their restarts all call from there, and whoever can call
  // from the coordinator's own host needs no flood to harm it.
  bool limit_loopback_joins = false;
  // Calls per peer credential: a burst of this many, then one per
  // peer_call_interval (a trainer makes a few a second, a waiting one polls
  // its round every 20 ms). Beyond: RESOURCE_EXHAUSTED. 0: no limit.
  int peer_call_burst = 1000;
  absl::Duration peer_call_interval = absl::Milliseconds(5);
};

// What the coordinator keeps for people watching the run; either may be
// null (GetHistory answers empty, UploadSample FAILED_PRECONDITION).
struct RunRecords {
  RunHistory* history = nullptr;
  NewestSample* newest_sample = nullptr;
};

// The minimum time between two sample grid uploads of one peer.
inline constexpr absl::Duration kSampleUploadInterval = absl::Seconds(10);

class CoordinatorCore {
 public:
  // All pointers must outlive the core. Peers join and leave through a
  // Membership over the ledger, liveness and rounds. `issuer` signs peer
  // credentials; null only where no caller is ever checked (tests that pass
  // Caller::Unchecked()).
  CoordinatorCore(ChunkLedger* ledger, PeerLiveness* liveness, RoundPlanner* rounds,
                  RunConfig config, CoordinatorOptions options, Clock* clock,
                  const CredentialIssuer* issuer = nullptr, RunRecords records = {});

  // Each call takes the caller the authenticator established. Peer calls act
  // for the peer of a Caller::Peer (the request's `peer` must be empty or
  // name it), refuse Caller::RunToken(), and trust the request's `peer` for
  // Caller::Unchecked() (servers without authentication).
  absl::StatusOr<v1::JoinResponse> Join(const v1::JoinRequest& request,
                                        const Caller& caller = Caller::Unchecked());
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& request,
                                                  const Caller& caller = Caller::Unchecked());
  absl::StatusOr<v1::LeaveResponse> Leave(const v1::LeaveRequest& request,
                                          const Caller& caller = Caller::Unchecked());
  absl::StatusOr<v1::AcquireChunksResponse> AcquireChunks(
      const v1::AcquireChunksRequest& request, const Caller& caller = Caller::Unchecked());
  absl::StatusOr<v1::RenewLeasesResponse> RenewLeases(
      const v1::RenewLeasesRequest& request, const Caller& caller = Caller::Unchecked());
  absl::StatusOr<v1::CompleteChunkResponse> CompleteChunk(
      const v1::CompleteChunkRequest& request, const Caller& caller = Caller::Unchecked());
  absl::StatusOr<v1::ReleaseChunksResponse> ReleaseChunks(
      const v1::ReleaseChunksRequest& request, const Caller& caller = Caller::Unchecked());
  absl::StatusOr<v1::RunState> GetRunState(const v1::GetRunStateRequest& request);
  // Lease ids and incarnations are left out unless `admin_token` is the
  // admin token or the caller is unchecked.
  absl::StatusOr<v1::ListChunksResponse> ListChunks(const v1::ListChunksRequest& request,
                                                    const Caller& caller = Caller::Unchecked(),
                                                    const std::string& admin_token = "");
  absl::StatusOr<v1::ListPeersResponse> ListPeers(const v1::ListPeersRequest& request,
                                                  const Caller& caller = Caller::Unchecked(),
                                                  const std::string& admin_token = "");
  absl::StatusOr<v1::ReportProgressResponse> ReportProgress(
      const v1::ReportProgressRequest& request, const Caller& caller = Caller::Unchecked());
  absl::StatusOr<v1::GetRoundResponse> GetRound(const v1::GetRoundRequest& request,
                                                const Caller& caller = Caller::Unchecked());
  absl::StatusOr<v1::ListRoundsResponse> ListRounds(const v1::ListRoundsRequest& request);
  // RoundPlanner::ConfirmedHash of the step.
  absl::StatusOr<v1::GetStepHashResponse> GetStepHash(const v1::GetStepHashRequest& request);
  // Records an auditor's verdicts and says where the round's audits stand;
  // a reducer accused by two different auditors (within eviction_ban) is
  // evicted and banned for eviction_ban.
  absl::StatusOr<v1::ReportAuditsResponse> ReportAudits(const v1::ReportAuditsRequest& request,
                                                        const Caller& caller = Caller::Unchecked());
  // Audit verdicts recorded since start, by verdict (AuditVerdict), and
  // reducers banned for them: for the metrics.
  uint64_t audit_verdicts(v1::AuditVerdict verdict) const;
  uint64_t reducers_banned() const { return reducers_banned_.load(); }
  // Reports whose parameter hash the other members' outvoted (the peer was
  // told to resynchronise), since start: for the metrics.
  uint64_t diverged_reports() const { return diverged_reports_.load(); }

  // Keeps the peer's sample grid for the status page (newest_sample.h).
  absl::StatusOr<v1::UploadSampleResponse> UploadSample(const v1::UploadSampleRequest& request,
                                                        const Caller& caller = Caller::Unchecked());
  // The run's history (run_history.h); empty without one.
  absl::StatusOr<v1::GetHistoryResponse> GetHistory(const v1::GetHistoryRequest& request);
  // `admin_token` is the caller's x-dd-admin-token metadata.
  absl::StatusOr<v1::AdminReleaseChunkResponse> AdminReleaseChunk(
      const v1::AdminReleaseChunkRequest& request, const std::string& admin_token);
  absl::StatusOr<v1::AdminEvictPeerResponse> AdminEvictPeer(
      const v1::AdminEvictPeerRequest& request, const std::string& admin_token);
  absl::StatusOr<v1::AdminInviteResponse> AdminInvite(const v1::AdminInviteRequest& request,
                                                      const std::string& admin_token);

  // Expires due leases and evicts silent peers (Membership::Tick); call
  // about once a second.
  void Tick();

 private:
  absl::Status CheckAdmin(const std::string& token) const;
  // The peer a peer call acts for (see the class comment).
  absl::StatusOr<PeerHandle> ActingPeer(const Caller& caller, const v1::PeerRef& named) const;
  // A credential for `peer`, expiring credential_ttl from now.
  absl::StatusOr<std::string> IssueCredential(const PeerHandle& peer, absl::Time* expires) const;
  // The ban-list key of an invitation (peer ids never look like it).
  static std::string InvitationKey(const std::string& name);
  // PermissionDenied while `peer_id` (or an InvitationKey) is banned.
  absl::Status CheckNotBanned(const std::string& peer_id) ABSL_LOCKS_EXCLUDED(ban_mu_);
  // AlreadyExists when a peer other than `joining_id` is registered at
  // `address` and sent a heartbeat within half the heartbeat TTL.
  absl::Status CheckAddressFree(const std::string& address, const std::string& joining_id) const;
  // ResourceExhausted when `remote_ip` joined too often (a token bucket).
  absl::Status TakeJoinToken(const std::string& remote_ip);
  // Deletes long-gone peers' records and expired bans; called by Tick.
  void CollectGarbage() ABSL_LOCKS_EXCLUDED(ban_mu_);
  // Removes `peer_id` now and bans it (and the invitation it joined with)
  // for `ban`. Returns the chunks released. NotFound for a peer not
  // registered, which is banned all the same when `even_if_gone`.
  absl::StatusOr<uint32_t> EvictAndBan(const std::string& peer_id, absl::Duration ban,
                                       const std::string& why, bool even_if_gone = false)
      ABSL_LOCKS_EXCLUDED(ban_mu_);
  // Drops what is counted per peer (completed samples, last upload) when it
  // left or rejoined.
  void ForgetPeerRecords(const std::string& peer_id) ABSL_LOCKS_EXCLUDED(peer_records_mu_);

  // Fixed after construction.
  const CredentialIssuer* const issuer_;
  const RunRecords records_;
  std::atomic<uint64_t> diverged_reports_{0};
  std::shared_ptr<const CredentialVerifier> verifier_;  // of issuer_'s key
  ChunkLedger* const ledger_;
  PeerLiveness* const liveness_;
  RoundPlanner* const rounds_;
  // Joins and removals change the three above together.
  Membership membership_;
  const RunConfig config_;
  const CoordinatorOptions options_;
  Clock* const clock_;

  // Peers an admin evicted, until when they stay out. In memory: a
  // coordinator restart lifts bans (their credentials are void anyway, since
  // an eviction ends the incarnation they name).
  absl::Mutex ban_mu_;
  absl::flat_hash_map<std::string, absl::Time> banned_until_ ABSL_GUARDED_BY(ban_mu_);
  // Peer id -> the name of the invitation it joined with. Kept after the
  // peer leaves (it may rejoin with its credential and be evicted later);
  // only invited joins add entries, and joins are rate-limited per address.
  absl::flat_hash_map<std::string, std::string> invited_by_ ABSL_GUARDED_BY(ban_mu_);
  absl::Time last_collection_ ABSL_GUARDED_BY(ban_mu_) = absl::InfinitePast();
  // Reducer peer id -> auditor peer id -> when it found the reducer
  // dishonest (entries older than eviction_ban are dropped).
  absl::flat_hash_map<std::string, absl::flat_hash_map<std::string, absl::Time>> accusations_
      ABSL_GUARDED_BY(ban_mu_);
  std::array<std::atomic<uint64_t>, 5> audit_verdicts_{};
  std::atomic<uint64_t> reducers_banned_{0};
  // Joins per remote IP; calls per peer (thread-safe themselves; mutable:
  // ActingPeer, a const check, takes from them).
  RateLimiter join_limiter_;
  mutable RateLimiter peer_call_limiter_;

  // Samples each peer incarnation has completed chunks with, the other half
  // (with its leases) of what bounds the samples it may report.
  absl::Mutex peer_records_mu_;
  absl::flat_hash_map<std::string, uint64_t> completed_samples_ ABSL_GUARDED_BY(peer_records_mu_);
  // When each peer last uploaded a sample grid (kSampleUploadInterval).
  absl::flat_hash_map<std::string, absl::Time> last_sample_upload_
      ABSL_GUARDED_BY(peer_records_mu_);
};

// Checks "host:port" (host a name, IPv4 or [IPv6]; port 1-65535).
absl::Status ValidateHostPort(const std::string& address, const char* field);

// PermissionDenied when `address`'s host is an IP literal other than
// `remote_ip` (both loopback counts as the same); OK for host names and an
// unknown `remote_ip`.
absl::Status CheckAddressIsCallers(const std::string& address, const std::string& remote_ip);

}  // namespace dd::coordinator

#endif  // SERVICES_COORDINATOR_COORDINATOR_CORE_H_
