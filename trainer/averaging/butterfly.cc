#include "trainer/averaging/butterfly.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include <glog/logging.h>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/thread/parallel_for.h"
#include "trainer/averaging/grpc_part_transport.h"
#include "trainer/averaging/round_record.h"
#include "trainer/averaging/send_schedule.h"

namespace dd::averaging {

std::vector<uint64_t> SplitSpans(uint64_t length, uint32_t members,
                                 const std::vector<double>& bandwidths) {
  std::vector<double> share(members, 1.0);
  double total = members;
  if (bandwidths.size() == members) {
    double sum = 0;
    for (double b : bandwidths) sum += std::max(0.0, b);
    if (sum > 0) {
      for (uint32_t i = 0; i < members; ++i) share[i] = std::max(0.0, bandwidths[i]);
      total = sum;
    }
  }
  std::vector<uint64_t> starts(members + 1, 0);
  double acc = 0;
  for (uint32_t i = 0; i < members; ++i) {
    acc += share[i];
    starts[i + 1] = i + 1 == members ? length : static_cast<uint64_t>(std::llround(length * acc / total));
    starts[i + 1] = std::max(starts[i + 1], starts[i]);
  }
  return starts;
}

ButterflyAllReduce::ButterflyAllReduce(AveragerService* local, SecurityConfig security)
    : ButterflyAllReduce(local->registry(),
                         std::make_shared<GrpcPartTransport>(std::move(security))) {}

ButterflyAllReduce::ButterflyAllReduce(ReducerRegistry* local,
                                       std::shared_ptr<PartTransport> transport)
    : local_(local), transport_(std::move(transport)) {}

const char* AuditOutcomeName(AuditOutcome outcome) {
  switch (outcome) {
    case AuditOutcome::kPassed: return "passed";
    case AuditOutcome::kMismatch: return "mismatch";
    case AuditOutcome::kRefused: return "refused";
    case AuditOutcome::kIncomplete: return "incomplete";
  }
  return "?";
}

namespace {

// One part on its way to a remote reducer (or a copy of it to an auditor);
// lives until its answer is handled.
struct Call {
  PartRef part;
  bool audit_copy = false;
  v1::ReducePartRequest request;
  v1::ReducePartResponse response;
  absl::Time deadline;
};

// An audited part this member knows of.
struct AuditPlan {
  uint32_t span = 0;
  uint32_t part = 0;
  uint32_t auditor = 0;
  uint64_t offset = 0;
  uint32_t count = 0;
};

// What the reducer answered this member for a part it audits.
struct AuditedAnswer {
  bool averaged = false;
  std::string data;
  std::vector<uint32_t> contributors;
};

// Judges one audited part: the reducer's own contribution (`revealed`, with
// its weight) and the others' copies, reduced again as the reducer must
// have, against what it answered.
AuditVerdict JudgeAudit(const AuditPlan& plan, const AuditedAnswer& answer,
                        const absl::StatusOr<v1::ReducePartResponse>& revealed,
                        const absl::StatusOr<AuditCopies>& copies, const RoundSpec& spec,
                        const AllReduceOptions& options) {
  AuditVerdict v{plan.span, plan.offset, AuditOutcome::kIncomplete, ""};
  if (!revealed.ok()) {
    v.outcome = AuditOutcome::kRefused;
    v.detail = absl::StrCat("no reveal: ", revealed.status().ToString());
    return v;
  }
  std::vector<float> own(plan.count);
  double own_weight = revealed->total_weight();
  if (!CodecFor(CodecId::kNone).Decode(revealed->data(), plan.count, own.data()).ok() ||
      !AllFinite(own.data(), own.size()) || !std::isfinite(own_weight) || own_weight < 0) {
    v.outcome = AuditOutcome::kRefused;
    v.detail = "revealed a malformed contribution";
    return v;
  }
  if (!spec.weights.empty()) own_weight = std::min(own_weight, spec.weights[plan.span]);
  if (!copies.ok()) {
    v.detail = copies.status().ToString();
    return v;
  }
  std::vector<const std::vector<float>*> rows;
  std::vector<double> weights;
  double total = 0;
  uint32_t previous = 0;
  for (size_t k = 0; k < answer.contributors.size(); ++k) {
    const uint32_t s = answer.contributors[k];
    if (s >= spec.peer_ids.size() || (k > 0 && s <= previous)) {
      v.outcome = AuditOutcome::kMismatch;
      v.detail = "the answer names contributors that are not members, or not in order";
      return v;
    }
    previous = s;
    const std::vector<float>* row = &own;
    double w = own_weight;
    if (s != plan.span) {
      if (!copies->given[s]) {
        v.detail = absl::StrCat("no copy from member ", s);
        return v;
      }
      row = &copies->rows[s];
      w = copies->weights[s];
    }
    total += w;
    if (w > 0) {
      rows.push_back(row);
      weights.push_back(w);
    }
  }
  std::string expected;
  if (total > 0) {
    std::vector<float> mean =
        AggregateRows(rows, weights, options.aggregation, options.clip_tau,
                      ReducerOptions{}.clip_iterations);
    CodecFor(options.codec).Encode(mean.data(), mean.size(), &expected);
  }
  if (answer.averaged != (total > 0) || answer.data != expected) {
    v.outcome = AuditOutcome::kMismatch;
    v.detail = absl::StrCat("its answer for ", answer.contributors.size(),
                            " contributors is not their aggregate");
    return v;
  }
  v.outcome = AuditOutcome::kPassed;
  return v;
}

// Parts of at most `part_elements` values that a span of `length` is sent in.
uint32_t PartsOf(uint64_t length, uint32_t part_elements) {
  return static_cast<uint32_t>((length + part_elements - 1) / part_elements);
}

// The audited parts a member knows of, by (span, part).
using AuditPlans = std::map<std::pair<uint32_t, uint32_t>, AuditPlan>;

// The audits of `spec` that this member takes part in (every audit but
// those of its own span, which it is not told of; malformed ones are
// skipped), and in `duties` those it performs itself. None unless the round
// is audited (and not with delta answers, which audits cannot check).
AuditPlans KnownAudits(const RoundSpec& spec, const AllReduceOptions& options,
                       std::vector<AuditDuty>* duties) {
  AuditPlans audited;
  if (!options.audited || options.delta_results) return audited;
  const uint32_t members = spec.peer_ids.size();
  const uint32_t me = spec.my_index;
  for (const PartAudit& a : spec.audits) {
    if (a.span >= members || a.auditor >= members || a.auditor == a.span || a.span == me) {
      continue;  // not an audit this member can take part in
    }
    const uint64_t length = spec.span_starts[a.span + 1] - spec.span_starts[a.span];
    if (length == 0) continue;
    AuditPlan plan;
    plan.span = a.span;
    plan.part = static_cast<uint32_t>(a.part_seed % PartsOf(length, options.part_elements));
    plan.auditor = a.auditor;
    plan.offset = uint64_t{plan.part} * options.part_elements;
    plan.count = static_cast<uint32_t>(std::min<uint64_t>(options.part_elements, length - plan.offset));
    if (!audited.emplace(std::make_pair(plan.span, plan.part), plan).second) continue;
    if (plan.auditor == me) duties->push_back({plan.span, plan.offset, plan.count});
  }
  return audited;
}

// Asks the reducer of `plan`'s span for its own contribution to the part
// (REVEAL), waiting for the answer until `deadline`.
absl::StatusOr<v1::ReducePartResponse> AskToReveal(PartTransport* transport, const RoundSpec& spec,
                                                   const AuditPlan& plan, absl::Time deadline) {
  v1::ReducePartRequest request;
  request.set_kind(v1::REVEAL);
  request.set_round_id(spec.round_id);
  request.set_sender_peer_id(spec.peer_ids[spec.my_index]);
  request.set_sender_index(spec.my_index);
  request.set_span(plan.span);
  request.set_offset(plan.offset);
  request.set_count(plan.count);
  request.set_codec(v1::NONE);
  v1::ReducePartResponse response;
  absl::Mutex mu;
  bool done = false;
  absl::Status status;
  transport->Send(spec.addresses[plan.span], &request, &response, deadline,
                  [&](const absl::Status& s) {
                    absl::MutexLock lock(&mu);
                    status = s;
                    done = true;
                  });
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(&done));
  if (!status.ok()) return status;
  return response;
}

// After the round: for each part this member audits whose reducer answered
// it, the reducer reveals its own contribution, the senders' copies are
// taken from `local`, and the part is reduced again and judged against the
// answer. A part whose reducer never answered has no verdict (its span was
// not averaged here).
std::vector<AuditVerdict> PerformAudits(ReducerRegistry* local, PartTransport* transport,
                                        const RoundSpec& spec, const AllReduceOptions& options,
                                        const AuditPlans& audited,
                                        const std::map<uint32_t, AuditedAnswer>& answers) {
  std::vector<AuditVerdict> verdicts;
  for (const auto& [key, plan] : audited) {
    if (plan.auditor != spec.my_index) continue;
    auto answer = answers.find(plan.span);
    const absl::Time deadline = std::min(absl::Now() + options.reducer_timeout, options.deadline);
    if (answer == answers.end()) {
      (void)local->TakeAuditCopies(spec.round_id, plan.span, {}, absl::Now());  // frees them
      continue;
    }
    absl::StatusOr<v1::ReducePartResponse> revealed = AskToReveal(transport, spec, plan, deadline);
    std::vector<uint32_t> senders;
    for (uint32_t s : answer->second.contributors) {
      if (s != plan.span) senders.push_back(s);
    }
    // Copies travel with the parts, which the reducer had before it answered.
    absl::StatusOr<AuditCopies> copies = local->TakeAuditCopies(
        spec.round_id, plan.span, senders, std::min(absl::Now() + options.sender_timeout, deadline));
    AuditVerdict verdict = JudgeAudit(plan, answer->second, revealed, copies, spec, options);
    if (verdict.outcome != AuditOutcome::kPassed) {
      LOG(WARNING) << "round " << spec.round_id << ": audit of member " << plan.span << " ("
                   << spec.peer_ids[plan.span] << ") at offset " << plan.offset << ": "
                   << AuditOutcomeName(verdict.outcome) << " (" << verdict.detail << ")";
    }
    verdicts.push_back(std::move(verdict));
  }
  return verdicts;
}

absl::Status CheckRun(const RoundSpec& spec, const AllReduceOptions& options, const float* values,
                      size_t n, double weight) {
  const uint32_t members = spec.peer_ids.size();
  if (members == 0 || spec.addresses.size() != members || spec.span_starts.size() != members + 1 ||
      spec.my_index >= members || spec.span_starts.front() != 0 || spec.span_starts.back() != n ||
      (!spec.weights.empty() && spec.weights.size() != members)) {
    return absl::InvalidArgumentError("malformed round spec");
  }
  for (uint32_t i = 0; i < members; ++i) {
    if (spec.span_starts[i] > spec.span_starts[i + 1]) {
      return absl::InvalidArgumentError("span starts are not increasing");
    }
  }
  if (options.reducer_timeout <= options.sender_timeout) {
    return absl::InvalidArgumentError("reducer_timeout must exceed sender_timeout");
  }
  if (options.part_elements == 0 || options.parts_in_flight < 1) {
    return absl::InvalidArgumentError("part_elements and parts_in_flight must be positive");
  }
  if (!std::isfinite(weight) || weight < 0) {
    return absl::InvalidArgumentError("weight must be finite and >= 0");
  }
  if (!AllFinite(values, n)) {
    return absl::InvalidArgumentError("non-finite values are refused before sending");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<AllReduceResult> ButterflyAllReduce::Run(const RoundSpec& spec,
                                                        const AllReduceOptions& options,
                                                        float* values, size_t n, double weight,
                                                        CodecErrors errors) {
  const absl::Time start = absl::Now();
  if (absl::Status ok = CheckRun(spec, options, values, n, weight); !ok.ok()) return ok;
  // What the other reducers will count this member's values with.
  if (!spec.weights.empty()) weight = std::min(weight, spec.weights[spec.my_index]);
  const uint32_t members = spec.peer_ids.size();
  const Codec& codec = CodecFor(options.codec);
  const uint32_t me = spec.my_index;
  const uint64_t my_start = spec.span_starts[me];
  const uint64_t my_length = spec.span_starts[me + 1] - my_start;
  float* const codec_error = errors.sent;
  if (codec_error != nullptr) std::fill(codec_error, codec_error + n, 0.0f);

  // 0. The audits this member knows of: it sends copies of those parts to
  // their auditors, and audits those that name it.
  std::vector<AuditDuty> duties;
  const AuditPlans audited = KnownAudits(spec, options, &duties);

  // 1. This member's reducer, reachable by the others from now on.
  ReducerOptions ro;
  ro.span_length = my_length;
  ro.part_elements = options.part_elements;
  ro.num_members = members;
  ro.codec = options.codec;
  ro.aggregation = options.aggregation;
  ro.clip_tau = options.clip_tau;
  ro.delta_results = options.delta_results;
  ro.local_sender = me;
  ro.keep_local_inputs = options.audited;
  if (errors.mean != nullptr && !options.delta_results && !options.audited) {
    ro.mean_error = errors.mean + my_start;
  }
  auto reducer = std::make_shared<SpanReducer>(ro, start);
  local_->RegisterRound(spec.round_id, spec.peer_ids, me, reducer, spec.weights, duties);

  // 2. The schedule of what goes to the others.
  SendScheduleOptions so;
  so.parts_in_flight = options.parts_in_flight;
  so.start = start;
  so.reducer_timeout = options.reducer_timeout;
  so.deadline = options.deadline;
  so.max_send_mbps = options.max_send_mbps;
  std::vector<RemoteSpanPlan> plans;
  for (uint32_t j = 0; j < members; ++j) {
    if (j != me) plans.push_back({j, PartsOf(spec.span_starts[j + 1] - spec.span_starts[j], options.part_elements)});
  }
  RoundRecord record(spec.round_id, members, start);
  absl::Mutex mu;
  SendSchedule schedule(so, std::move(plans), reducer->num_parts());
  bool wake = false;  // a callback changed something
  AllReduceResult result;
  result.contributors.assign(members, 0);
  uint64_t averaged_elements = 0;
  std::vector<uint32_t> remote_min_contributors(members, UINT32_MAX);
  std::vector<std::shared_ptr<const PartOutcome>> own(reducer->num_parts());
  uint32_t own_done = 0;
  std::map<Call*, std::unique_ptr<Call>> calls;  // in flight
  std::set<std::pair<uint32_t, uint32_t>> copied;   // audited parts copied
  std::map<uint32_t, AuditedAnswer> audited_answers;  // by span, for duties

  // Own values go into the own reducer (exact, no codec on the way in) just
  // ahead of this member's sending, since every member sends its parts in
  // the same order: contributing the whole span first held all its
  // accumulators at once and delayed the first byte sent (by ~1 s for a
  // 64 MB span on the dev VM).
  auto contribute_own = [&](uint32_t p) {
    uint64_t off = uint64_t{p} * options.part_elements;
    reducer->Contribute(me, off, values + my_start + off, reducer->PartLength(p), weight,
                        absl::Now(), [&, p](absl::StatusOr<std::shared_ptr<const PartOutcome>> r) {
                          absl::MutexLock lock(&mu);
                          if (r.ok()) own[p] = *r;
                          ++own_done;
                          wake = true;
                        });
  };

  // Encodes a part (and what the codec dropped of it); runs outside `mu`
  // and, for several parts, on several threads: parts are disjoint.
  auto encode = [&](Call& call) {
    const uint32_t j = call.part.member;
    const uint64_t span_start = spec.span_starts[j];
    const uint64_t off = uint64_t{call.part.part} * options.part_elements;
    const uint32_t count = static_cast<uint32_t>(
        std::min<uint64_t>(options.part_elements, spec.span_starts[j + 1] - span_start - off));
    v1::ReducePartRequest& req = call.request;
    req.set_round_id(spec.round_id);
    req.set_sender_peer_id(spec.peer_ids[me]);
    req.set_sender_index(me);
    req.set_span(j);
    req.set_offset(off);
    req.set_count(count);
    req.set_codec(static_cast<v1::Codec>(options.codec));
    req.set_weight(options.claimed_weight_for_test > 0 ? options.claimed_weight_for_test : weight);
    const float* sent = values + span_start + off;
    codec.Encode(sent, count, req.mutable_data());
    if (codec_error != nullptr && options.codec != CodecId::kNone) {
      std::vector<float> kept(count);
      if (codec.Decode(req.data(), count, kept.data()).ok()) {
        float* error = codec_error + span_start + off;
        for (uint32_t k = 0; k < count; ++k) error[k] = sent[k] - kept[k];
      }
    }
  };

  // Handles a remote's answer; runs on a transport thread without `mu`
  // while the mean is written (parts are disjoint, and a part is sent again
  // only after its answer), then with it.
  auto on_answer = [&](Call* raw, const absl::Status& status) {
    const PartRef part = raw->part;
    const v1::ReducePartResponse& resp = raw->response;
    const uint32_t count = raw->request.count();
    bool applied = false;
    if (status.ok() && resp.averaged()) {
      std::vector<float> mean(count);
      if (static_cast<int>(resp.codec()) == static_cast<int>(options.codec) &&
          codec.Decode(resp.data(), count, mean.data()).ok()) {
        float* dst = values + spec.span_starts[part.member] + raw->request.offset();
        if (resp.delta()) {
          // Applied to the exact local values, so this member's own
          // compression error is not counted twice.
          for (uint32_t k = 0; k < count; ++k) dst[k] += mean[k];
        } else {
          std::memcpy(dst, mean.data(), count * sizeof(float));
        }
        applied = true;
      } else {
        LOG(WARNING) << "round " << spec.round_id << ": member " << part.member
                     << " answered a part that does not decode; keeping own values";
      }
    }
    const absl::Time now = absl::Now();
    absl::MutexLock lock(&mu);
    wake = true;
    std::unique_ptr<Call> owned = std::move(calls[raw]);
    calls.erase(raw);
    const SendSchedule::Answer answer =
        status.ok() ? SendSchedule::Answer::kAnswered
        : status.code() == absl::StatusCode::kNotFound ? SendSchedule::Answer::kNotRegistered
                                                       : SendSchedule::Answer::kFailed;
    const bool gave_up = schedule.OnAnswer(part, answer, now);
    const int member = static_cast<int>(part.member);
    if (status.ok()) {
      if (auto a = audited.find({part.member, part.part});
          a != audited.end() && a->second.auditor == me) {
        AuditedAnswer& kept = audited_answers[part.member];
        kept.averaged = resp.averaged();
        kept.data = resp.data();
        kept.contributors.assign(resp.contributor_indexes().begin(),
                                 resp.contributor_indexes().end());
      }
      record.Add(RoundEvent::kPartAnswered, member, part.part, now);
      result.bytes_received += resp.data().size();
      if (applied) {
        averaged_elements += count;
        result.max_total_weight = std::max(result.max_total_weight, resp.total_weight());
      }
      remote_min_contributors[part.member] =
          std::min(remote_min_contributors[part.member], resp.contributors());
    } else if (answer == SendSchedule::Answer::kNotRegistered && !schedule.failed(part.member)) {
      record.Add(RoundEvent::kNotRegisteredYet, member, part.part, now);
    } else {
      const std::string why = answer == SendSchedule::Answer::kFailed
                                  ? std::string(status.message())
                                  : "never registered the round";
      record.Add(RoundEvent::kReducerFailed, member, part.part, now, why);
      if (gave_up) {
        LOG(WARNING) << "round " << spec.round_id << ": reducer " << member << " ("
                     << spec.addresses[part.member] << ") " << why
                     << "; keeping own values for the rest of its span";
      }
    }
  };

  // A copy's answer only says it arrived.
  auto on_copy_answer = [&](Call* raw, const absl::Status& status) {
    if (!status.ok()) {
      LOG(WARNING) << "round " << spec.round_id << ": the copy of an audited part to member "
                   << raw->request.span() << "'s auditor: " << status;
    }
    absl::MutexLock lock(&mu);
    wake = true;
    calls.erase(raw);
  };

  {
    absl::MutexLock lock(&mu);
    while (true) {
      const std::vector<PartRef> sends = schedule.TakeSends(absl::Now());
      const auto [own_from, own_to] = schedule.TakeOwnParts();
      if (!sends.empty() || own_from < own_to) {
        mu.Unlock();  // contributions and answers call back and take `mu`
        for (uint32_t p = own_from; p < own_to; ++p) contribute_own(p);
        std::vector<std::unique_ptr<Call>> batch(sends.size());
        for (size_t i = 0; i < sends.size(); ++i) {
          batch[i] = std::make_unique<Call>();
          batch[i]->part = sends[i];
        }
        ParallelFor(
            batch.size(),
            [&](size_t begin, size_t end) {
              for (size_t i = begin; i < end; ++i) encode(*batch[i]);
            },
            options.encode_threads, 1);
        // Copies of audited parts go to their auditors with the part itself
        // (the auditor's own copy straight into its registry), once.
        std::vector<std::unique_ptr<Call>> copies;
        for (auto& call : batch) {
          auto a = audited.find({call->part.member, call->part.part});
          if (a == audited.end() || !copied.insert(a->first).second) continue;
          if (a->second.auditor == me) {
            std::vector<float> mine(call->request.count());
            if (codec.Decode(call->request.data(), mine.size(), mine.data()).ok()) {
              local_->AddOwnAuditCopy(spec.round_id, a->second.span, std::move(mine), weight);
            }
            continue;
          }
          auto copy = std::make_unique<Call>();
          copy->part = call->part;
          copy->audit_copy = true;
          copy->request = call->request;
          copy->request.set_kind(v1::AUDIT_COPY);
          copies.push_back(std::move(copy));
        }
        for (auto& copy : copies) batch.push_back(std::move(copy));
        std::vector<Call*> to_send;
        const absl::Time now = absl::Now();
        mu.Lock();
        for (auto& call : batch) {
          result.bytes_sent += call->request.data().size();
          if (!call->audit_copy) {
            schedule.RecordSent(call->request.data().size());
            record.Add(RoundEvent::kPartSent, static_cast<int>(call->part.member),
                       call->part.part, now);
          }
          call->deadline = std::min(now + options.reducer_timeout, options.deadline);
          to_send.push_back(call.get());
          calls[call.get()] = std::move(call);
        }
        mu.Unlock();
        for (Call* raw : to_send) {
          if (raw->audit_copy) {
            transport_->Send(spec.addresses[audited.at({raw->part.member, raw->part.part}).auditor],
                             &raw->request, &raw->response, raw->deadline,
                             [&on_copy_answer, raw](const absl::Status& status) {
                               on_copy_answer(raw, status);
                             });
            continue;
          }
          transport_->Send(spec.addresses[raw->part.member], &raw->request, &raw->response,
                           raw->deadline,
                           [&on_answer, raw](const absl::Status& status) { on_answer(raw, status); });
        }
        mu.Lock();
        continue;
      }
      // Copies in flight still point into this frame: wait for them too.
      if (own_done == reducer->num_parts() && schedule.RemotesDone() && calls.empty()) break;
      mu.AwaitWithTimeout(absl::Condition(&wake), absl::Milliseconds(5));
      wake = false;
      const absl::Time now = absl::Now();
      mu.Unlock();
      if (const int excluded = reducer->ExcludeStalled(now, options.sender_timeout); excluded > 0) {
        mu.Lock();
        result.senders_excluded += excluded;
        mu.Unlock();
        record.Add(RoundEvent::kSendersExcluded, -1, 0, now,
                   absl::StrCat(excluded, " silent for ",
                                absl::FormatDuration(options.sender_timeout)));
      }
      mu.Lock();
      if (now >= options.deadline && schedule.PassDeadline()) {
        record.Add(RoundEvent::kDeadline, -1, 0, now);
        LOG(WARNING) << "round " << spec.round_id << " reached its deadline";
        mu.Unlock();
        reducer->Finish();
        mu.Lock();
      }
    }
  }
  local_->EndRound(spec.round_id);

  // 2b. The parts this member audits.
  result.audits = PerformAudits(local_, transport_.get(), spec, options, audited, audited_answers);

  // 3. Own span: the reducer's decoded outcome, identical to what the others got.
  uint32_t own_min_contributors = UINT32_MAX;
  for (uint32_t p = 0; p < reducer->num_parts(); ++p) {
    if (own[p] == nullptr) continue;
    own_min_contributors = std::min(own_min_contributors, own[p]->contributors);
    if (!own[p]->averaged) continue;
    result.max_total_weight = std::max(result.max_total_weight, own[p]->total_weight);
    uint64_t off = uint64_t{p} * options.part_elements;
    std::memcpy(values + my_start + off, own[p]->values.data(),
                own[p]->values.size() * sizeof(float));
    averaged_elements += own[p]->values.size();
  }
  result.contributors[me] = reducer->num_parts() == 0 ? 0 : own_min_contributors;
  for (uint32_t j = 0; j < members; ++j) {
    if (j != me) {
      result.contributors[j] =
          remote_min_contributors[j] == UINT32_MAX ? 0 : remote_min_contributors[j];
    }
  }
  result.fraction_averaged = n == 0 ? 1.0 : static_cast<double>(averaged_elements) / n;
  result.elapsed = absl::Now() - start;
  if (schedule.any_failed() || schedule.past_deadline() || result.senders_excluded > 0 ||
      result.elapsed > options.slow_round) {
    result.trouble = record.Dump();
    LOG(WARNING) << "round " << spec.round_id << " took "
                 << absl::FormatDuration(result.elapsed) << ", averaged "
                 << result.fraction_averaged << " of the vector; what this member saw:\n"
                 << result.trouble;
  }
  return result;
}

}  // namespace dd::averaging
