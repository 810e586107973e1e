// libFuzzer target for the averaging service's request handling: a member's
// ReducerRegistry with a registered round (three members; this member
// reduces span 0 and audits a part of span 1) takes a sequence of
// ReducePartRequest messages from the input, of every kind, in any sender's
// name, with or without a matching credential. Input: a codec byte, then
// records of [caller byte][2-byte length][serialized request]. Checked:
// nothing crashes, every call is answered exactly once (after the round
// ends and the registry goes), and every averaged answer decodes to the
// part's count of finite values. tools/fuzz/run_fuzzers.sh builds it with
// clang; reducer_registry_fuzz_test runs it under Bazel on generated input.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "trainer/averaging/reducer_registry.h"

namespace {

using namespace dd::averaging;  // NOLINT: a fuzz target

constexpr uint64_t kRound = 7;
constexpr uint32_t kPart = 256;
constexpr uint64_t kSpan = 700;  // three parts, the last one short

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const CodecId codec = static_cast<CodecId>(data[0] % kNumCodecs);
  std::vector<std::unique_ptr<v1::ReducePartRequest>> requests;
  std::vector<std::unique_ptr<v1::ReducePartResponse>> responses;
  std::vector<int> answers;
  std::vector<absl::Status> statuses;
  {
    ReducerRegistry registry(absl::ZeroDuration(), 1 << 20);
    ReducerOptions o;
    o.span_length = kSpan;
    o.part_elements = kPart;
    o.num_members = 3;
    o.codec = codec;
    o.aggregation = (data[0] & 0x80) ? Aggregation::kCenteredClip : Aggregation::kMean;
    o.local_sender = 0;
    o.keep_local_inputs = true;
    auto reducer = std::make_shared<SpanReducer>(o);
    registry.RegisterRound(kRound, {"p0", "p1", "p2"}, 0, reducer, {4, 4, 4},
                           {AuditDuty{1, kPart, kPart}});
    std::vector<float> own(kPart, 0.5f);
    reducer->Contribute(0, 0, own.data(), kPart, 4, absl::Now(), [](auto) {});
    size_t at = 1;
    // Records are answered into slots that outlive the registry.
    const size_t max_records = 64;
    requests.reserve(max_records);
    responses.reserve(max_records);
    answers.assign(max_records, 0);
    statuses.assign(max_records, absl::OkStatus());
    while (at + 3 <= size && requests.size() < max_records) {
      const uint8_t caller_byte = data[at];
      const size_t length = size_t{data[at + 1]} | (size_t{data[at + 2]} << 8);
      at += 3;
      if (at + length > size) break;
      auto request = std::make_unique<v1::ReducePartRequest>();
      if (!request->ParseFromArray(data + at, static_cast<int>(length))) {
        at += length;
        continue;
      }
      at += length;
      // Mostly about the registered round, so the checks past it are reached.
      if (caller_byte & 1) request->set_round_id(kRound);
      const dd::Caller caller = (caller_byte & 2)
                                    ? dd::Caller::Peer(request->sender_peer_id(), 1)
                                : (caller_byte & 4) ? dd::Caller::Peer("p2", 1)
                                : (caller_byte & 8) ? dd::Caller::RunToken()
                                                    : dd::Caller::Unchecked();
      const size_t slot = requests.size();
      requests.push_back(std::move(request));
      responses.push_back(std::make_unique<v1::ReducePartResponse>());
      registry.ReducePart(requests[slot].get(), responses[slot].get(),
                          [slot, &answers, &statuses](const absl::Status& s) {
                            ++answers[slot];
                            statuses[slot] = s;
                          },
                          caller);
    }
    registry.EndRound(kRound);
    (void)registry.TakeAuditCopies(kRound, 1, {1, 2}, absl::Now());
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    if (answers[i] != 1) __builtin_trap();  // every call answered exactly once
    const v1::ReducePartResponse& r = *responses[i];
    if (statuses[i].ok() && r.averaged() && !r.delta()) {
      std::vector<float> mean(requests[i]->count());
      if (!CodecFor(codec).Decode(r.data(), mean.size(), mean.data()).ok() ||
          !AllFinite(mean.data(), mean.size())) {
        __builtin_trap();
      }
    }
  }
  return 0;
}
