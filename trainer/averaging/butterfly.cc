#include "trainer/averaging/butterfly.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "common/rpc/channel.h"
#include "protos/averaging.grpc.pb.h"

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
    : local_(local), security_(std::move(security)) {}

std::shared_ptr<grpc::Channel> ButterflyAllReduce::ChannelTo(const std::string& address) {
  absl::MutexLock lock(&mu_);
  auto& ch = channels_[address];
  if (ch == nullptr) {
    auto made = MakeChannel(address, security_);
    if (made.ok()) ch = *made;
  }
  return ch;
}

namespace {

// State shared by the sending loop and the gRPC completion callbacks.
struct Call {
  grpc::ClientContext context;
  v1::ReducePartRequest request;
  v1::ReducePartResponse response;
  uint32_t member;
  uint32_t part;
};

struct RemoteSpan {
  uint32_t member;
  uint64_t start, length;
  uint32_t num_parts;
  uint32_t next_part = 0;
  uint32_t in_flight = 0;
  uint32_t done_parts = 0;
  bool failed = false;
  uint32_t min_contributors = UINT32_MAX;
  // Until the reducer has answered once it may not know the round yet: send
  // one part at a time so a NOT_FOUND wastes one part, not a window.
  // NOT_FOUND comes back at once, so a probe still pending after a moment
  // means the reducer has the round.
  bool confirmed = false;
  absl::Time probe_sent = absl::InfiniteFuture();
  int not_found = 0;  // NOT_FOUND answers so far: the retry delay doubles
  std::unique_ptr<v1::Averager::Stub> stub;
};

}  // namespace

absl::StatusOr<AllReduceResult> ButterflyAllReduce::Run(const RoundSpec& spec,
                                                        const AllReduceOptions& options,
                                                        float* values, size_t n, double weight,
                                                        CodecErrors errors) {
  absl::Time start = absl::Now();
  uint32_t members = spec.peer_ids.size();
  if (members == 0 || spec.addresses.size() != members || spec.span_starts.size() != members + 1 ||
      spec.my_index >= members || spec.span_starts.front() != 0 || spec.span_starts.back() != n) {
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
  const Codec& codec = CodecFor(options.codec);
  const uint32_t me = spec.my_index;
  const uint64_t my_start = spec.span_starts[me];
  const uint64_t my_length = spec.span_starts[me + 1] - my_start;
  float* const codec_error = errors.sent;
  if (codec_error != nullptr) std::fill(codec_error, codec_error + n, 0.0f);

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
  if (errors.mean != nullptr && !options.delta_results) ro.mean_error = errors.mean + my_start;
  auto reducer = std::make_shared<SpanReducer>(ro, start);
  local_->RegisterRound(spec.round_id, spec.peer_ids, me, reducer);

  RoundRecord record(spec.round_id, members, start);
  absl::Mutex mu;
  bool wake = false;  // a callback changed something; guarded by mu
  AllReduceResult result;
  result.contributors.assign(members, 0);
  uint64_t averaged_elements = 0;
  std::vector<std::shared_ptr<const PartOutcome>> own(reducer->num_parts());
  uint32_t own_done = 0;
  uint32_t own_min_contributors = UINT32_MAX;

  // 2. Own values go into the own reducer (exact, no codec on the way in)
  // just ahead of this member's sending, since every member sends its parts
  // in the same order: contributing the whole span first held all its
  // accumulators at once and delayed the first byte sent (by ~1 s for a
  // 64 MB span on the dev VM).
  uint32_t own_next = 0;  // guarded by mu
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

  // 3. Other members' spans.
  std::vector<RemoteSpan> remotes;
  for (uint32_t j = 0; j < members; ++j) {
    uint64_t len = spec.span_starts[j + 1] - spec.span_starts[j];
    if (j == me || len == 0) continue;
    RemoteSpan r;
    r.member = j;
    r.start = spec.span_starts[j];
    r.length = len;
    r.num_parts = static_cast<uint32_t>((len + options.part_elements - 1) / options.part_elements);
    auto channel = ChannelTo(spec.addresses[j]);
    if (channel == nullptr) {
      r.failed = true;
    } else {
      r.stub = v1::Averager::NewStub(channel);
    }
    remotes.push_back(std::move(r));
  }
  std::map<Call*, std::unique_ptr<Call>> calls;  // in flight
  std::deque<std::pair<absl::Time, std::pair<size_t, uint32_t>>> retries;  // (when, (remote, part))

  // Launches part `part` of remote `ri`; requires mu.
  auto launch = [&](size_t ri, uint32_t part) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    RemoteSpan& r = remotes[ri];
    auto call = std::make_unique<Call>();
    call->member = r.member;
    call->part = part;
    uint64_t off = uint64_t{part} * options.part_elements;
    uint32_t count =
        static_cast<uint32_t>(std::min<uint64_t>(options.part_elements, r.length - off));
    v1::ReducePartRequest& req = call->request;
    req.set_round_id(spec.round_id);
    req.set_sender_peer_id(spec.peer_ids[me]);
    req.set_sender_index(me);
    req.set_span(r.member);
    req.set_offset(off);
    req.set_count(count);
    req.set_codec(static_cast<v1::Codec>(options.codec));
    req.set_weight(weight);
    codec.Encode(values + r.start + off, count, req.mutable_data());
    if (codec_error != nullptr && options.codec != CodecId::kNone) {
      std::vector<float> kept(count);
      if (codec.Decode(req.data(), count, kept.data()).ok()) {
        const float* sent = values + r.start + off;
        float* error = codec_error + r.start + off;
        for (uint32_t k = 0; k < count; ++k) error[k] = sent[k] - kept[k];
      }
    }
    result.bytes_sent += req.data().size();
    record.Add(RoundEvent::kPartSent, static_cast<int>(r.member), part, absl::Now());
    call->context.set_deadline(
        absl::ToChronoTime(std::min(absl::Now() + options.reducer_timeout, options.deadline)));
    Call* raw = call.get();
    calls[raw] = std::move(call);
    if (!r.confirmed && r.in_flight == 0) r.probe_sent = absl::Now();
    r.in_flight++;
    r.stub->async()->ReducePart(
        &raw->context, &raw->request, &raw->response, [&, raw, ri](grpc::Status status) {
          absl::MutexLock lock(&mu);
          wake = true;
          RemoteSpan& rs = remotes[ri];
          rs.in_flight--;
          std::unique_ptr<Call> owned = std::move(calls[raw]);
          calls.erase(raw);
          uint32_t count = owned->request.count();
          if (status.error_code() != grpc::StatusCode::NOT_FOUND) rs.confirmed = true;
          if (status.ok()) {
            record.Add(RoundEvent::kPartAnswered, static_cast<int>(rs.member), owned->part,
                       absl::Now());
            const auto& resp = owned->response;
            result.bytes_received += resp.data().size();
            if (resp.averaged()) {
              std::vector<float> mean(count);
              if (static_cast<int>(resp.codec()) == static_cast<int>(options.codec) &&
                  codec.Decode(resp.data(), count, mean.data()).ok()) {
                float* dst = values + rs.start + owned->request.offset();
                if (resp.delta()) {
                  // Applied to the exact local values, so this member's own
                  // compression error is not counted twice.
                  for (uint32_t k = 0; k < count; ++k) dst[k] += mean[k];
                } else {
                  std::memcpy(dst, mean.data(), count * sizeof(float));
                }
                averaged_elements += count;
              } else {
                LOG(WARNING) << "round " << spec.round_id << ": member " << rs.member
                             << " answered a part that does not decode; keeping own values";
              }
            }
            rs.min_contributors = std::min(rs.min_contributors, resp.contributors());
            rs.done_parts++;
          } else if (status.error_code() == grpc::StatusCode::NOT_FOUND &&
                     absl::Now() < std::min(options.deadline, start + options.reducer_timeout)) {
            // The reducer has not registered the round yet: try again soon
            // (10 ms, doubling to 500 ms, so a member that is late, or never
            // starts, is not flooded), but a member that never starts the
            // round is a failed reducer.
            const int64_t delay_ms = std::min<int64_t>(500, int64_t{10} << std::min(rs.not_found++, 6));
            record.Add(RoundEvent::kNotRegisteredYet, static_cast<int>(rs.member), owned->part,
                       absl::Now());
            retries.push_back({absl::Now() + absl::Milliseconds(delay_ms), {ri, owned->part}});
          } else {
            record.Add(RoundEvent::kReducerFailed, static_cast<int>(rs.member), owned->part,
                       absl::Now(), status.error_message());
            if (!rs.failed) {
              LOG(WARNING) << "round " << spec.round_id << ": reducer " << rs.member << " ("
                           << spec.addresses[rs.member] << ") failed: " << status.error_message()
                           << "; keeping own values for the rest of its span";
            }
            rs.failed = true;
            rs.done_parts++;
          }
        });
  };

  auto all_done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (own_done < reducer->num_parts()) return false;
    for (const RemoteSpan& r : remotes) {
      if (r.in_flight > 0) return false;
      if (!r.failed && r.done_parts < r.num_parts) return false;
    }
    return retries.empty() || std::all_of(remotes.begin(), remotes.end(),
                                          [](const RemoteSpan& r) { return r.failed; });
  };

  bool past_deadline = false;
  {
    absl::MutexLock lock(&mu);
    while (true) {
      // Keep `parts_in_flight` parts going to every healthy reducer.
      absl::Time now = absl::Now();
      while (!retries.empty() && retries.front().first <= now) {
        auto [ri, part] = retries.front().second;
        retries.pop_front();
        if (!remotes[ri].failed && !past_deadline) launch(ri, part);
      }
      auto under_cap = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
        if (options.max_send_mbps <= 0) return true;
        double allowed = absl::ToDoubleSeconds(absl::Now() - start) * options.max_send_mbps * 1e6 / 8;
        return result.bytes_sent <= allowed;
      };
      for (size_t ri = 0; ri < remotes.size(); ++ri) {
        RemoteSpan& r = remotes[ri];
        if (!r.confirmed && r.in_flight > 0 && now - r.probe_sent > absl::Milliseconds(50)) {
          r.confirmed = true;
        }
        while (!r.failed && !past_deadline && r.next_part < r.num_parts &&
               r.in_flight < (r.confirmed ? static_cast<uint32_t>(options.parts_in_flight) : 1u) &&
               under_cap()) {
          launch(ri, r.next_part++);
        }
      }
      // Own parts up to 2 windows ahead of the slowest remote this member
      // is still sending to; all of them once nothing is left to send.
      uint32_t own_target = reducer->num_parts();
      for (const RemoteSpan& r : remotes) {
        if (r.failed || r.next_part >= r.num_parts) continue;
        own_target = std::min<uint32_t>(
            own_target, static_cast<uint32_t>(static_cast<double>(r.next_part) / r.num_parts *
                                              reducer->num_parts()) +
                            2 * static_cast<uint32_t>(options.parts_in_flight));
      }
      if (own_next < own_target) {
        uint32_t from = own_next, to = own_target;
        own_next = own_target;
        mu.Unlock();  // a contribution may complete a part and call back
        for (uint32_t p = from; p < to; ++p) contribute_own(p);
        mu.Lock();
        continue;
      }
      if (all_done()) break;
      mu.AwaitWithTimeout(absl::Condition(+[](bool* b) { return *b; }, &wake),
                          absl::Milliseconds(5));
      wake = false;
      now = absl::Now();
      mu.Unlock();
      if (const int excluded = reducer->ExcludeStalled(now, options.sender_timeout); excluded > 0) {
        result.senders_excluded += excluded;
        record.Add(RoundEvent::kSendersExcluded, -1, 0, now,
                   absl::StrCat(excluded, " silent for ",
                                absl::FormatDuration(options.sender_timeout)));
      }
      mu.Lock();
      if (now >= options.deadline && !past_deadline) {
        past_deadline = true;
        record.Add(RoundEvent::kDeadline, -1, 0, now);
        LOG(WARNING) << "round " << spec.round_id << " reached its deadline";
        for (auto& [raw, call] : calls) raw->context.TryCancel();
        for (RemoteSpan& r : remotes) r.failed = true;
        retries.clear();
        mu.Unlock();
        reducer->Finish();
        mu.Lock();
      }
    }
  }
  local_->EndRound(spec.round_id);

  // 4. Own span: the reducer's decoded outcome, identical to what the others got.
  for (uint32_t p = 0; p < reducer->num_parts(); ++p) {
    if (own[p] == nullptr) continue;
    own_min_contributors = std::min(own_min_contributors, own[p]->contributors);
    if (!own[p]->averaged) continue;
    uint64_t off = uint64_t{p} * options.part_elements;
    std::memcpy(values + my_start + off, own[p]->values.data(),
                own[p]->values.size() * sizeof(float));
    averaged_elements += own[p]->values.size();
  }
  result.contributors[me] = reducer->num_parts() == 0 ? 0 : own_min_contributors;
  for (const RemoteSpan& r : remotes) {
    result.contributors[r.member] = r.min_contributors == UINT32_MAX ? 0 : r.min_contributors;
  }
  result.fraction_averaged = n == 0 ? 1.0 : static_cast<double>(averaged_elements) / n;
  result.elapsed = absl::Now() - start;
  const bool reducer_failed =
      std::any_of(remotes.begin(), remotes.end(), [](const RemoteSpan& r) { return r.failed; });
  if (reducer_failed || past_deadline || result.senders_excluded > 0 ||
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
