// ButterflyAllReduce: one member's side of a butterfly all-reduce round.
//
// The flat vector is split into one span per member (RoundSpec::span_starts).
// This member reduces its own span (a SpanReducer registered in its
// ReducerRegistry) and, at the same time, sends every other member its
// values of that member's span, part by part with several parts in flight,
// receiving each part's mean as it is reduced. Every member ends with the
// same bytes for every span that was averaged.
//
// Three pieces, each replaceable on its own: SendSchedule decides which part
// goes when (windows, retries, upload cap, deadline; pure logic), a
// PartTransport carries parts (gRPC, or in memory for tests), and this class
// encodes, sends, applies the answers and keeps the round's flight record.
//
// Failures (hivemind's rules): a sender silent for `sender_timeout` is
// excluded by the reducer; a reducer that does not answer a part within
// `reducer_timeout` (or fails) leaves this member's own values in the rest
// of its span; nothing runs past `deadline`. The result says what fraction of
// the vector was averaged and over how many members.
#ifndef TRAINER_AVERAGING_BUTTERFLY_H_
#define TRAINER_AVERAGING_BUTTERFLY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/rpc/security.h"
#include "trainer/averaging/averager_service.h"
#include "trainer/averaging/part_transport.h"
#include "trainer/averaging/reducer_registry.h"
#include "trainer/averaging/span_reducer.h"

namespace dd::averaging {

// One audited part (PartKind in protos/averaging.proto): part
// `part_seed % parts of the span` of member `span`'s span is reduced again by
// member `auditor`. The coordinator tells every member but the span's
// reducer.
struct PartAudit {
  uint32_t span = 0;
  uint64_t part_seed = 0;
  uint32_t auditor = 0;
};

struct RoundSpec {
  uint64_t round_id = 0;
  std::vector<std::string> peer_ids;   // by member index
  std::vector<std::string> addresses;  // host:port by member index
  // Span i is [span_starts[i], span_starts[i+1]); the last entry is the
  // vector's length. Client-only members have empty spans.
  std::vector<uint64_t> span_starts;
  uint32_t my_index = 0;
  // The weight the round assigned each member (the samples it reported), by
  // member index; empty: every member's weight is taken as sent. A member
  // contributes with at most its assigned weight, and reducers hold senders
  // to theirs.
  std::vector<double> weights;
  // The audits this member knows of (none of its own span).
  std::vector<PartAudit> audits;
};

struct AllReduceOptions {
  CodecId codec = CodecId::kNone;
  Aggregation aggregation = Aggregation::kMean;
  double clip_tau = 1.0;
  uint32_t part_elements = 1 << 17;  // 512 KiB of float32 per part
  int parts_in_flight = 4;           // per reducer
  absl::Duration sender_timeout = absl::Seconds(10);
  absl::Duration reducer_timeout = absl::Seconds(20);  // must exceed sender_timeout
  absl::Time deadline = absl::InfiniteFuture();
  // hivemind's result form (see ReducerOptions::delta_results). Every member
  // of a round must use the same setting.
  bool delta_results = false;
  // Caps this member's upload (encoded bytes) in megabits per second, so a
  // volunteer's home link is not saturated; 0 = no cap.
  double max_send_mbps = 0;
  // A round that fails in part, or takes longer than this, writes its
  // RoundRecord (round_record.h) to the log.
  absl::Duration slow_round = absl::InfiniteDuration();
  // Parts taken together (at the start of the round, or when a window
  // opens) are encoded on up to this many threads (0: the machine's cores):
  // the sparse codec's encoding is the slowest thing a member does in a
  // round on a fast link.
  int encode_threads = 0;
  // The round is audited (some of every span's parts, unknown to the span's
  // reducer): this member's reducer keeps its own contributions for the
  // auditors' REVEAL calls, and reducer-side error feedback
  // (CodecErrors::mean) is off, since no auditor could reproduce it. Not
  // with delta_results (each sender gets its own answer).
  bool audited = false;
  // Security tests only (> 0): the weight written into the parts this
  // member sends other reducers, past its assignment, as a sender lying
  // about its samples would (its own span is reduced honestly).
  double claimed_weight_for_test = 0;
};

// How an audit of one part ended at its auditor.
enum class AuditOutcome {
  kPassed,      // the reducer's answer is the aggregate of what it was sent
  kMismatch,    // it is not: the reducer is dishonest
  kRefused,     // the reducer did not reveal its own contribution (or
                // revealed something malformed)
  kIncomplete,  // a copy from a member the reducer counted never came: no
                // judgement
};
const char* AuditOutcomeName(AuditOutcome outcome);

struct AuditVerdict {
  uint32_t span = 0;
  uint64_t offset = 0;
  AuditOutcome outcome = AuditOutcome::kIncomplete;
  std::string detail;
};

struct AllReduceResult {
  double fraction_averaged = 0;        // of the vector's elements
  std::vector<uint32_t> contributors;  // per span: fewest members in any part
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  int senders_excluded = 0;            // by this member's reducer
  // The largest total weight any part was averaged with: at most the
  // samples the round assigned its members, whatever a sender claimed.
  double max_total_weight = 0;
  absl::Duration elapsed;
  // The round's record (RoundRecord::Dump) when it was slow or failed in
  // part (a reducer failed, senders were excluded, the deadline passed);
  // empty otherwise.
  std::string trouble;
  // The audits this member made (as auditor), in span order; an audit whose
  // part the reducer never answered is left out (the span was not averaged).
  std::vector<AuditVerdict> audits;
};

// Error feedback of one round (n floats each, or null), kept by the member
// across rounds so what a lossy codec drops is sent later.
struct CodecErrors {
  // Receives what the codec dropped of this member's values on their way to
  // the reducers: values − decode(encode(values)) for the parts sent, 0 for
  // its own span (contributed exactly) and for parts never sent.
  float* sent = nullptr;
  // The reducer's (its own span only; other positions are left alone):
  // added to the span's means before they are encoded, and then set to what
  // the codec dropped of that sum (ReducerOptions::mean_error).
  float* mean = nullptr;
};

// Splits `length` elements into spans proportional to `bandwidths` (equal
// when empty or all zero); members with bandwidth 0 get empty spans.
std::vector<uint64_t> SplitSpans(uint64_t length, uint32_t members,
                                 const std::vector<double>& bandwidths = {});

class ButterflyAllReduce {
 public:
  // Over gRPC: `local` is the service hosting this member's reducers and
  // must outlive this object; `security` is used for the channels to other
  // members.
  ButterflyAllReduce(AveragerService* local, SecurityConfig security);
  // Over any transport: `local` is this member's registry (reached by the
  // others through their transports) and must outlive this object.
  ButterflyAllReduce(ReducerRegistry* local, std::shared_ptr<PartTransport> transport);

  // Averages `values[0..n)` (n == span_starts.back()) in place with weight
  // `weight` (samples), with error feedback through `errors` (CodecErrors).
  // InvalidArgument for a malformed spec, options with reducer_timeout <=
  // sender_timeout, or non-finite values or weight (refused before anything
  // is sent). Encoding runs on up to `options.encode_threads` threads.
  absl::StatusOr<AllReduceResult> Run(const RoundSpec& spec, const AllReduceOptions& options,
                                      float* values, size_t n, double weight,
                                      CodecErrors errors = {});

 private:
  // Fixed after construction.
  ReducerRegistry* const local_;
  const std::shared_ptr<PartTransport> transport_;
};

}  // namespace dd::averaging

#endif  // TRAINER_AVERAGING_BUTTERFLY_H_
