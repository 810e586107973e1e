// ReducerRegistry: a member's reducers by round, and the checks every part
// sent to them passes, as pure logic (proto messages and absl::Status, no
// gRPC types). AveragerService is its gRPC face; an in-memory PartTransport
// (local_part_transport.h) calls it directly, so the butterfly is tested
// without servers.
//
// For each round this member takes part in, ButterflyAllReduce registers the
// SpanReducer of its span. A part is checked (membership, span, codec, sizes,
// decodable and finite data) and handed to the reducer, whose outcome
// answers it. Nothing here blocks: a part waiting for other members simply
// stays unanswered until its part is reduced.
//
// Members learn of a round at slightly different moments, so a part may
// arrive before this member has registered the round. Such a part is held
// (up to `early_part_wait`, and up to `max_held_bytes` of data in all) and
// served when the round registers, instead of being refused and sent again.
// Held parts are bounded by number and by their whole size.
#ifndef TRAINER_AVERAGING_REDUCER_REGISTRY_H_
#define TRAINER_AVERAGING_REDUCER_REGISTRY_H_

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/rpc/caller.h"
#include "protos/averaging.pb.h"
#include "trainer/averaging/span_reducer.h"

namespace dd::averaging {

namespace v1 = ::distdiff::averaging::v1;

// A part this member audits in a round: the part at `offset` (`count`
// values) of member `span`'s span (see PartKind in protos/averaging.proto).
struct AuditDuty {
  uint32_t span = 0;
  uint64_t offset = 0;
  uint32_t count = 0;
};

// The copies an auditor received of one audited part: by sender index, the
// decoded values (empty when none came) and the weight each counts with.
struct AuditCopies {
  std::vector<std::vector<float>> rows;
  std::vector<double> weights;
  std::vector<bool> given;
};

class ReducerRegistry {
 public:
  // Called exactly once per part; `response` is filled when the status is OK.
  using Done = std::function<void(const absl::Status&)>;

  // `early_part_wait`: how long a part for a round not registered here yet
  // is held before it is answered NOT_FOUND (zero: at once); a part that
  // would take the held parts' data past `max_held_bytes` is answered
  // NOT_FOUND at once.
  explicit ReducerRegistry(absl::Duration early_part_wait = absl::Seconds(2),
                           size_t max_held_bytes = size_t{64} << 20);
  // Answers every held part UNAVAILABLE.
  ~ReducerRegistry();

  // Starts answering for `round_id`: members by index, this member's index,
  // and the reducer of its span. Parts already held for it are served.
  // `weights` (by member index, or empty) are the weights the round
  // assigned: a sender's part counts with at most its assigned weight,
  // whatever it claims.
  // `audits`: the parts this member audits in the round; their copies
  // (PartKind AUDIT_COPY) are collected until TakeAuditCopies.
  void RegisterRound(uint64_t round_id, std::vector<std::string> peer_ids, uint32_t my_index,
                     std::shared_ptr<SpanReducer> reducer, std::vector<double> weights = {},
                     std::vector<AuditDuty> audits = {});

  // Ends the round: its reducer finishes; later parts for it get
  // FAILED_PRECONDITION. A reducer that keeps its own inputs
  // (ReducerOptions::keep_local_inputs) still answers REVEAL calls until two
  // newer rounds have ended.
  void EndRound(uint64_t round_id);

  // Adds this member's own copy of an audited part (it is a sender too).
  void AddOwnAuditCopy(uint64_t round_id, uint32_t span, std::vector<float> values,
                       double weight);

  // Waits until the copies of the part of `span` audited in `round_id` from
  // every member in `senders` have come (or `deadline`), then hands over all
  // copies received and forgets the part. NotFound when this member does
  // not audit that span in that round.
  absl::StatusOr<AuditCopies> TakeAuditCopies(uint64_t round_id, uint32_t span,
                                              const std::vector<uint32_t>& senders,
                                              absl::Time deadline);

  // Hands one part to its round's reducer. `request` and `response` must
  // stay valid until `done` runs: at once on this thread, later on the
  // thread that completes the part, or on the expiry thread. Codes:
  //   OK                   `response` holds the part's outcome.
  //   NOT_FOUND            the round is not registered here (after holding
  //                        the part up to early_part_wait): try again.
  //   FAILED_PRECONDITION  the round is over, or the sender was excluded.
  //   PERMISSION_DENIED    the sender is not another member of the round,
  //                        or `caller` is not the sender it names (a peer
  //                        credential of another member, or only the run
  //                        token). The named sender is not excluded then:
  //                        nobody can get a member excluded in its name.
  //   INVALID_ARGUMENT     wrong span, codec, offset or count; data that
  //                        does not decode or is not finite. The sender is
  //                        excluded from the round.
  //   UNAVAILABLE          this member is shutting down.
  // AUDIT_COPY and REVEAL requests have the codes of PartKind's comment.
  void ReducePart(const v1::ReducePartRequest* request, v1::ReducePartResponse* response,
                  Done done, const Caller& caller = Caller::Unchecked());

 private:
  struct Round {
    std::vector<std::string> peer_ids;
    uint32_t my_index;
    std::shared_ptr<SpanReducer> reducer;
    std::vector<double> weights;  // by member index; empty: as sent
  };
  // The copies of one part this member audits.
  struct AuditSlot {
    std::vector<std::string> peer_ids;
    uint32_t my_index = 0;
    std::vector<double> assigned;  // weights by member index; empty: as sent
    AuditDuty duty;
    CodecId codec = CodecId::kNone;
    AuditCopies copies;
  };
  // A part that arrived before its round was registered.
  struct HeldPart {
    const v1::ReducePartRequest* request;
    v1::ReducePartResponse* response;
    Done done;
    absl::Time expires;
    size_t bytes;  // the whole request, so empty data with huge ids counts
  };
  static constexpr size_t kFinishedRoundsKept = 64;
  static constexpr size_t kMaxHeldParts = 4096;

  // Checks membership and data, then hands the part to the round's reducer
  // (or, for an audit copy, to ServeAuditCopy).
  void Serve(const v1::ReducePartRequest* request, v1::ReducePartResponse* response, Done done);
  void ServeAuditCopy(const v1::ReducePartRequest* request, v1::ReducePartResponse* response,
                      Done done);
  // Answers a REVEAL from a kept reducer.
  void Reveal(const v1::ReducePartRequest* request, v1::ReducePartResponse* response, Done done);
  // Answers held parts NOT_FOUND as they expire, until the registry ends.
  void ExpireHeldParts();

  // Fixed after construction.
  const absl::Duration early_part_wait_;
  const size_t max_held_bytes_;

  absl::Mutex mu_;
  // In arrival order, so also in expiry order.
  std::deque<HeldPart> held_ ABSL_GUARDED_BY(mu_);
  size_t held_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::map<uint64_t, Round> rounds_ ABSL_GUARDED_BY(mu_);
  // Ended rounds whose reducer keeps its own inputs, newest last (two).
  std::deque<std::pair<uint64_t, Round>> revealable_ ABSL_GUARDED_BY(mu_);
  // (round, span) -> the copies of the part audited there.
  std::map<std::pair<uint64_t, uint32_t>, AuditSlot> audits_ ABSL_GUARDED_BY(mu_);
  std::set<uint64_t> finished_ ABSL_GUARDED_BY(mu_);
  std::deque<uint64_t> finished_order_ ABSL_GUARDED_BY(mu_);

  std::thread expirer_;  // runs ExpireHeldParts; last, so it starts last
};

// Security tests only: a dishonest reducer's answer. An averaged answer to a
// REDUCE part is decoded, scaled by `factor` and encoded again; anything
// else is left as it is.
void ScaleAveragedAnswerForTest(float factor, const v1::ReducePartRequest& request,
                                v1::ReducePartResponse* response);

}  // namespace dd::averaging

#endif  // TRAINER_AVERAGING_REDUCER_REGISTRY_H_
