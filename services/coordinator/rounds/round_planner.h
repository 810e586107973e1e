// RoundPlanner: the coordinator side of averaging. Peers report how many
// samples they accumulated toward the current global step; once the fresh
// reports add up to the run's target batch size, a round opens with the
// reporting peers as members (also those that reported 0 samples: a peer
// announces itself as it starts a step), the span of the vector each reduces
// (reachable peers share it equally, or by reported bandwidth; client-only
// and unreachable peers get none), and a deadline. The global step then
// advances; a peer that was not in the round reports again for the next one.
// Pure logic: no gRPC types.
#ifndef SERVICES_COORDINATOR_ROUNDS_ROUND_PLANNER_H_
#define SERVICES_COORDINATOR_ROUNDS_ROUND_PLANNER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/time/clock.h"
#include "services/coordinator/rounds/hash_vote.h"
#include "protos/coordinator.pb.h"

namespace dd::coordinator {

// A round opened or resolved, for metrics.
struct RoundEvent {
  enum class Kind { kOpened, kApplied, kFailed };
  Kind kind;
  uint64_t round_id = 0;
  // kApplied: the slowest member's averaging time.
  double duration_seconds = 0;
};

struct RoundPlannerOptions {
  uint64_t target_batch_size = 256;
  // Reports older than this do not count (the peer may have died).
  absl::Duration report_ttl = absl::Seconds(60);
  // How long members have to finish the all-reduce.
  absl::Duration round_timeout = absl::Seconds(60);
  size_t rounds_kept = 100;
  // Where the step count starts (a restarted coordinator: the persisted one).
  uint64_t initial_global_step = 0;
  // A restarted coordinator: the peers active in the ledger when it started.
  // The rounds that made initial_global_step went with the old process, so
  // these peers confirm that step's weights in the round's place (see
  // ConfirmedHash); a peer that joined since cannot vote for it.
  std::vector<std::string> members_at_start;
  // Makes the new step durable before a round for the old one is handed
  // out (called under the planner's lock): when it fails the round does not
  // open and the report fails with its status, so a restarted coordinator
  // never counts a step its peers already applied. Null: nothing to persist.
  std::function<absl::Status(uint64_t)> persist_step;
  // Told of every round opened and resolved (under the planner's lock: it
  // must be quick and must not call the planner). Null: nobody listens.
  std::function<void(const RoundEvent&)> on_round_event;
  // Audits of each reducing member's span per round (PartKind in
  // protos/averaging.proto): each a part chosen at random, audited by a
  // different other reducing member chosen at random (so at most the other
  // reducers' number); 0: none. Rounds with fewer than two reducing members
  // are not audited.
  uint32_t reducer_audits = 0;
};

// Where a round's audits stand, for its members.
struct AuditStatus {
  uint32_t pending = 0;
  bool failed = false;
  std::vector<uint32_t> failed_spans;  // member indexes
  // Verdicts this call recorded that found a reducer dishonest:
  // (reducer's peer id, auditor's peer id).
  std::vector<std::pair<std::string, std::string>> accusations;
};

// What the planner needs to know about a peer when a round opens.
struct MemberInfo {
  std::string address;  // reachable averaging address, or empty
};

// How far a member's span share may be from the median: reported bandwidth
// is the member's own claim, so no member can take (or shed) the spans.
inline constexpr double kMaxShareRatio = 4.0;

// Span shares from reported bandwidths (0: not reported): each within
// kMaxShareRatio of the median of those reported (the lower middle one of
// an even count, so that one inflated claim among two cannot move it);
// those not reporting get the median; all equal when nobody reports.
std::vector<double> SpanShares(const std::vector<double>& bandwidth_mbps);

class RoundPlanner {
 public:
  RoundPlanner(RoundPlannerOptions options, Clock* clock);

  // Records a report. `peer_info` is consulted when the report completes a
  // round. Returns the current step and the samples reported toward it.
  // FailedPrecondition when `global_step` is not the current step (the peer
  // missed a round and must resynchronise). InvalidArgument for bad numbers.
  // persist_step's error when the new step could not be made durable (the
  // report is kept; the round opens on a later report).
  absl::StatusOr<distdiff::coordinator::v1::ReportProgressResponse> Report(
      const std::string& peer_id, uint64_t global_step, uint64_t samples,
      double samples_per_second, double bandwidth_mbps,
      const std::function<MemberInfo(const std::string&)>& peer_info);

  // The newest round after `after_round_id` that includes `peer_id`.
  std::optional<distdiff::coordinator::v1::Round> RoundFor(const std::string& peer_id,
                                                           uint64_t after_round_id) const;

  // Recent rounds, newest first. Rounds whose members have not all reported
  // their result by the deadline plus report_ttl are FAILED by now.
  std::vector<distdiff::coordinator::v1::Round> Recent();

  // Records how round `round_id` ended for member `peer_id`, and resolves
  // the round: FAILED on the first member's failure, APPLIED once every
  // member applied it. A member's first result counts; later ones are
  // ignored. A restarted planner keeps no round that made its initial step,
  // but a peer of options.members_at_start that failed it (round id
  // initial_global_step) says so here, and no longer stands in for that
  // round's members in ConfirmedHash (unless none of the others can say).
  // NotFound for a round no longer kept (or never opened), PermissionDenied
  // when the peer is not a member, InvalidArgument for an averaging time
  // that is negative, not finite or above a day.
  absl::Status RecordResult(const std::string& peer_id, uint64_t round_id, bool applied,
                            double averaging_seconds);

  // Records `peer_id`'s verdicts on the audits it was assigned in round
  // `round_id` (none: only asks) and says where the round's audits stand.
  // A verdict already recorded is kept. PermissionDenied for a non-member or
  // an audit assigned to another member; InvalidArgument for a PENDING
  // verdict or a detail above 256 bytes; NotFound for a round not kept.
  absl::StatusOr<AuditStatus> RecordAudits(
      const std::string& peer_id, uint64_t round_id,
      const std::vector<distdiff::coordinator::v1::AuditReport>& reports);

  uint64_t global_step() const;

  // Whether the members of the round that made `step` confirm a hash of
  // the weights after it: more than half of the members that did not fail
  // the round reported it. A round nobody applied (every member failed it,
  // or an audit failed it) left the weights of the step before, so the
  // round before confirms it; back to step 0, `initial` says so. Never for
  // a round no longer kept. A restarted coordinator keeps no round that made
  // its initial step: options.members_at_start stand for that round's
  // members (those silent for report_ttl after the start count no more, as
  // silent members of a round do; those that said they failed it count only
  // when none of the others can say).
  // (The answer is GetStepHash's, protos/coordinator.proto.)
  distdiff::coordinator::v1::GetStepHashResponse ConfirmedHash(uint64_t step);

  // Records the hash of the shared weights `peer_id` holds after `step` and
  // judges it against the other members' (HashVote). When `peer_id` stands
  // outvoted its report toward the current step is withdrawn: told so, it
  // drops those samples to resynchronise, and a round opened on them would
  // wait for a member with nothing to send. Judge a report's hash before
  // planning its samples (Report), and plan them only when the peer is not
  // outvoted. (A peer outvoted by a later vote learns it on its next report;
  // a round that opened with it before then has it take part with nothing.)
  HashVote::Verdict JudgeHash(const std::string& peer_id, uint64_t step, const std::string& hash);

  // Forgets a peer's report (it left or was evicted) and, with `hashes`,
  // the hashes it reported (a new incarnation replaces it): a peer that
  // left or fell silent still confirms the steps it applied. Its rounds
  // still pending count as failed by it. Without `hashes` the peer has
  // departed: for a step it applied but never reported a hash of (it died
  // in between), it no longer counts among the members that confirm, or
  // that step could never be confirmed.
  void Forget(const std::string& peer_id, bool hashes = true);
  // The peer was evicted by an admin or for a dishonest reduction: its
  // hashes are forgotten and it counts for nothing in ConfirmedHash, in
  // the rounds it was a member of either.
  void Disown(const std::string& peer_id);

 private:
  struct PeerReport {
    uint64_t samples;
    double bandwidth_mbps;
    absl::Time at;
  };

  // Resolves `round` from its members' outcomes (and the clock: members
  // silent past the deadline plus report_ttl fail it); tells the listener.
  void ResolveLocked(distdiff::coordinator::v1::Round* round, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Notify(const RoundEvent& event) const;

  const RoundPlannerOptions options_;
  Clock* const clock_;
  const absl::Time started_;  // members_at_start fall silent from here

  HashVote hashes_;  // thread-safe itself

  mutable absl::Mutex mu_;
  uint64_t global_step_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, PeerReport> reports_ ABSL_GUARDED_BY(mu_);
  std::deque<distdiff::coordinator::v1::Round> rounds_ ABSL_GUARDED_BY(mu_);
  absl::BitGen random_ ABSL_GUARDED_BY(mu_);  // audited parts and auditors
  // A set of peer ids that keeps the newest `capacity` added (the rounds
  // they matter for are long gone by the time the oldest is dropped).
  class RecentIds {
   public:
    explicit RecentIds(size_t capacity) : capacity_(capacity) {}
    bool contains(const std::string& id) const { return added_.count(id) > 0; }
    void Add(const std::string& id);
    void Remove(const std::string& id);

   private:
    const size_t capacity_;
    uint64_t next_ = 0;
    std::map<std::string, uint64_t> added_;  // id -> when added
    std::map<uint64_t, std::string> order_;  // when added -> id
  };
  static constexpr size_t kPeersKept = 4096;
  // Peers evicted by an admin or for a dishonest reduction.
  RecentIds disowned_ ABSL_GUARDED_BY(mu_){kPeersKept};
  // Peers that left or fell silent: their missing hash reports no longer
  // hold a confirmation back.
  RecentIds departed_ ABSL_GUARDED_BY(mu_){kPeersKept};
  // Peers of options_.members_at_start that failed the round that made the
  // initial step (they hold the weights of the step before, and cannot
  // confirm the step's).
  std::set<std::string> failed_start_round_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dd::coordinator

#endif  // SERVICES_COORDINATOR_ROUNDS_ROUND_PLANNER_H_
