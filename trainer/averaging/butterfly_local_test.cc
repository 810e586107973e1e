// The butterfly with N members as threads in one process over the in-memory
// transport (no servers, no sockets), checked against the closed-form
// weighted mean: the send schedule, the reducers' checks and the faults of a
// real round (a member that is unreachable, one whose parts vanish, one that
// registers the round late) in milliseconds.
#include <algorithm>
#include <cmath>
#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "trainer/averaging/butterfly.h"
#include "trainer/averaging/local_part_transport.h"

namespace dd::averaging {
namespace {

struct Group {
  // `wrap` (optional) puts something between the members and the
  // transport, e.g. a dishonest reducer's answers.
  using Wrap = std::function<std::shared_ptr<PartTransport>(std::shared_ptr<PartTransport>)>;
  explicit Group(int n, absl::Duration early_part_wait = absl::Seconds(2), Wrap wrap = nullptr)
      : transport(std::make_shared<LocalPartTransport>()) {
    std::shared_ptr<PartTransport> used = wrap ? wrap(transport) : transport;
    for (int i = 0; i < n; ++i) {
      registries.push_back(std::make_unique<ReducerRegistry>(early_part_wait));
      transport->Attach(Address(i), registries.back().get());
      members.push_back(std::make_unique<ButterflyAllReduce>(registries.back().get(), used));
    }
  }
  static std::string Address(int i) { return absl::StrCat("member-", i); }

  RoundSpec Spec(uint64_t length, uint64_t round_id = 1) const {
    RoundSpec spec;
    spec.round_id = round_id;
    for (size_t i = 0; i < members.size(); ++i) {
      spec.peer_ids.push_back(absl::StrCat("peer-", i));
      spec.addresses.push_back(Address(i));
    }
    spec.span_starts = SplitSpans(length, members.size());
    spec.audits = audits;
    return spec;
  }

  // Every member is told of these but those of its own span (as the
  // coordinator tells them).
  std::vector<PartAudit> audits;

  std::shared_ptr<LocalPartTransport> transport;
  std::vector<std::unique_ptr<ReducerRegistry>> registries;
  std::vector<std::unique_ptr<ButterflyAllReduce>> members;
};

float Value(int i, uint64_t k) { return std::cos(0.002f * k - i) * (2 + i) - 0.05f * i; }

struct Outcome {
  std::vector<std::vector<float>> values;
  std::vector<absl::StatusOr<AllReduceResult>> results;
};

// Members not in `skip` run the round, member i starting `delay[i]` late.
Outcome RunRound(Group& g, const AllReduceOptions& options, const std::vector<double>& weights,
            uint64_t length, const std::vector<int>& skip = {},
            const std::vector<absl::Duration>& delay = {}) {
  Outcome out;
  const int n = g.members.size();
  out.values.assign(n, std::vector<float>(length));
  out.results.assign(n, absl::UnknownError("not run"));
  RoundSpec base = g.Spec(length);
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    for (uint64_t k = 0; k < length; ++k) out.values[i][k] = Value(i, k);
    if (std::count(skip.begin(), skip.end(), i)) continue;
    threads.emplace_back([&, i] {
      if (i < static_cast<int>(delay.size())) absl::SleepFor(delay[i]);
      RoundSpec spec = base;
      spec.my_index = i;
      spec.audits.erase(std::remove_if(spec.audits.begin(), spec.audits.end(),
                                       [i](const PartAudit& a) { return a.span == uint32_t(i); }),
                        spec.audits.end());
      out.results[i] =
          g.members[i]->Run(spec, options, out.values[i].data(), length, weights[i]);
    });
  }
  for (auto& t : threads) t.join();
  return out;
}

double Mean(const std::vector<double>& w, uint64_t k, const std::vector<int>& only) {
  double num = 0, den = 0;
  for (int i : only) {
    num += w[i] * Value(i, k);
    den += w[i];
  }
  return num / den;
}

AllReduceOptions Options() {
  AllReduceOptions o;
  o.part_elements = 500;
  o.parts_in_flight = 3;
  o.sender_timeout = absl::Milliseconds(300);
  o.reducer_timeout = absl::Milliseconds(600);
  o.deadline = absl::Now() + absl::Seconds(20);
  return o;
}

TEST(ButterflyLocal, EveryGroupSizeGetsTheWeightedMeanOnEveryMember) {
  for (int n : {1, 2, 3, 5, 8}) {
    Group g(n);
    std::vector<double> w;
    std::vector<int> all;
    for (int i = 0; i < n; ++i) {
      w.push_back(1 + 2 * i);
      all.push_back(i);
    }
    const uint64_t length = 20'011;  // parts of unequal spans, a short last one
    Outcome out = RunRound(g, Options(), w, length);
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(out.results[i].ok()) << n << ": " << out.results[i].status();
      EXPECT_DOUBLE_EQ(out.results[i]->fraction_averaged, 1.0);
      EXPECT_TRUE(out.results[i]->trouble.empty()) << out.results[i]->trouble;
      EXPECT_EQ(out.values[i], out.values[0]) << "member " << i << " differs";
    }
    for (uint64_t k = 0; k < length; k += 97) {
      ASSERT_NEAR(out.values[0][k], Mean(w, k, all), 1e-5) << n << " " << k;
    }
  }
}

TEST(ButterflyLocal, SeveralEncodingThreadsGiveTheSameBytesAsOne) {
  std::vector<std::vector<float>> results;
  for (int threads : {1, 4}) {
    Group g(3);
    AllReduceOptions o = Options();
    o.codec = CodecId::kTopK8Bit;
    o.part_elements = 8192;
    o.parts_in_flight = 8;
    o.encode_threads = threads;
    Outcome out = RunRound(g, o, {1, 1, 2}, 200'000);
    for (auto& r : out.results) ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(out.values[1], out.values[0]);
    results.push_back(out.values[0]);
  }
  EXPECT_EQ(results[0], results[1]);
}

TEST(ButterflyLocal, AnUnreachableMemberLeavesOwnValuesInItsSpanOnly) {
  Group g(3);
  g.transport->Refuse(Group::Address(2));
  const uint64_t length = 9'000;
  Outcome out = RunRound(g, Options(), {1, 2, 3}, length, /*skip=*/{2});
  const RoundSpec spec = g.Spec(length);
  for (int i : {0, 1}) {
    ASSERT_TRUE(out.results[i].ok()) << out.results[i].status();
    EXPECT_FALSE(out.results[i]->trouble.empty());
    EXPECT_NEAR(out.results[i]->fraction_averaged, 2.0 / 3, 1e-3);
    for (uint64_t k = 0; k < length; k += 31) {
      if (k >= spec.span_starts[2]) {
        EXPECT_EQ(out.values[i][k], Value(i, k)) << k;  // its own value, untouched
      } else {
        // Member 2 never sent: the others' mean, after it was excluded.
        ASSERT_NEAR(out.values[i][k], Mean({1, 2, 3}, k, {0, 1}), 1e-5) << k;
      }
    }
  }
}

TEST(ButterflyLocal, PartsThatVanishFailTheirReducerAtTheReducerTimeout) {
  Group g(3);
  g.transport->Cut(Group::Address(1));
  AllReduceOptions o = Options();
  const absl::Time start = absl::Now();
  Outcome out = RunRound(g, o, {1, 1, 1}, 6'000, /*skip=*/{1});
  // Not before the reducer timeout, and not much after.
  EXPECT_GE(absl::Now() - start, o.reducer_timeout);
  for (int i : {0, 2}) {
    ASSERT_TRUE(out.results[i].ok()) << out.results[i].status();
    EXPECT_NE(out.results[i]->trouble.find("failed"), std::string::npos)
        << out.results[i]->trouble;
    EXPECT_NEAR(out.results[i]->fraction_averaged, 2.0 / 3, 1e-3);
  }
  EXPECT_EQ(out.values[0][0], out.values[2][0]);
}

TEST(ButterflyLocal, AMemberThatRegistersLateIsRetriedNotFailed) {
  // No holding of early parts: every part sent too early is NOT_FOUND.
  Group g(3, /*early_part_wait=*/absl::ZeroDuration());
  AllReduceOptions o = Options();
  o.reducer_timeout = absl::Seconds(5);
  o.sender_timeout = absl::Seconds(4);
  Outcome out = RunRound(g, o, {1, 1, 1}, 6'000, {},
                    {absl::ZeroDuration(), absl::ZeroDuration(), absl::Milliseconds(300)});
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(out.results[i].ok()) << out.results[i].status();
    EXPECT_DOUBLE_EQ(out.results[i]->fraction_averaged, 1.0) << i;
    EXPECT_EQ(out.values[i], out.values[0]);
  }
  // The probe rule: while member 2 was missing, each other member had one
  // part at a time on its way to it, retried at 10, 20, 40, ... ms: about
  // six tries in 300 ms, not a window of parts each time. 24 parts make
  // the round.
  EXPECT_LE(g.transport->parts_sent(), 24u + 2 * 10);
}

TEST(ButterflyLocal, TheDeadlineEndsARoundWhoseMemberNeverComes) {
  Group g(2, absl::ZeroDuration());
  AllReduceOptions o = Options();
  o.sender_timeout = absl::Seconds(30);
  o.reducer_timeout = absl::Seconds(60);
  o.deadline = absl::Now() + absl::Milliseconds(400);
  Outcome out = RunRound(g, o, {1, 1}, 4'000, /*skip=*/{1});
  ASSERT_TRUE(out.results[0].ok()) << out.results[0].status();
  EXPECT_NE(out.results[0]->trouble.find("deadline"), std::string::npos)
      << out.results[0]->trouble;
  EXPECT_LT(out.results[0]->fraction_averaged, 1.0);
}

// A reducer that answers every part with its mean times `scale` (the same
// to every sender, so the members still end equal) and, with
// `refuse_reveals`, refuses to show its own contribution.
class DishonestReducer final : public PartTransport {
 public:
  DishonestReducer(std::shared_ptr<PartTransport> inner, std::string address, float scale,
                   bool refuse_reveals = false)
      : inner_(std::move(inner)),
        address_(std::move(address)),
        scale_(scale),
        refuse_reveals_(refuse_reveals) {}

  void Send(const std::string& address, const v1::ReducePartRequest* request,
            v1::ReducePartResponse* response, absl::Time deadline, Done done) override {
    if (address != address_) {
      inner_->Send(address, request, response, deadline, std::move(done));
      return;
    }
    if (request->kind() == v1::REVEAL && refuse_reveals_) {
      done(absl::UnavailableError("no"));
      return;
    }
    inner_->Send(address, request, response, deadline,
                 [this, request, response, done = std::move(done)](const absl::Status& s) {
                   if (s.ok()) ScaleAveragedAnswerForTest(scale_, *request, response);
                   done(s);
                 });
  }

 private:
  const std::shared_ptr<PartTransport> inner_;
  const std::string address_;
  const float scale_;
  const bool refuse_reveals_;
};

// Each span audited at one part, by the next member.
std::vector<PartAudit> OneAuditPerSpan(int n) {
  std::vector<PartAudit> audits;
  for (int j = 0; j < n; ++j) {
    audits.push_back({uint32_t(j), uint64_t(7 + 13 * j), uint32_t((j + 1) % n)});
  }
  return audits;
}

TEST(ButterflyLocal, AuditsOfHonestReducersPassWithEveryCodecAndAggregation) {
  for (CodecId codec : {CodecId::kNone, CodecId::kFp16, CodecId::kBlockwise8Bit}) {
    for (Aggregation aggregation : {Aggregation::kMean, Aggregation::kCenteredClip}) {
      Group g(4);
      g.audits = OneAuditPerSpan(4);
      AllReduceOptions o = Options();
      o.codec = codec;
      o.aggregation = aggregation;
      o.audited = true;
      Outcome out = RunRound(g, o, {1, 2, 3, 4}, 9'001);
      for (int i = 0; i < 4; ++i) {
        ASSERT_TRUE(out.results[i].ok()) << out.results[i].status();
        EXPECT_DOUBLE_EQ(out.results[i]->fraction_averaged, 1.0);
        EXPECT_EQ(out.values[i], out.values[0]);
        // Member i audits span i-1, and only that one.
        ASSERT_EQ(out.results[i]->audits.size(), 1u) << i;
        const AuditVerdict& v = out.results[i]->audits[0];
        EXPECT_EQ(v.span, uint32_t((i + 3) % 4));
        EXPECT_EQ(v.outcome, AuditOutcome::kPassed)
            << static_cast<int>(codec) << " " << static_cast<int>(aggregation) << ": "
            << v.detail;
      }
    }
  }
}

TEST(ButterflyLocal, AReducerReturningAScaledMeanIsCaughtByItsAuditor) {
  for (CodecId codec : {CodecId::kNone, CodecId::kBlockwise8Bit}) {
    // Even a mean off by 1 % in every value is caught.
    for (float scale : {10.0f, 1.01f}) {
      Group g(4, absl::Seconds(2), [&](std::shared_ptr<PartTransport> inner) {
        return std::make_shared<DishonestReducer>(inner, Group::Address(1), scale);
      });
      g.audits = OneAuditPerSpan(4);
      AllReduceOptions o = Options();
      o.codec = codec;
      o.audited = true;
      Outcome out = RunRound(g, o, {1, 1, 1, 1}, 8'000);
      for (int i = 0; i < 4; ++i) {
        ASSERT_TRUE(out.results[i].ok()) << out.results[i].status();
        ASSERT_EQ(out.results[i]->audits.size(), 1u);
        const AuditVerdict& v = out.results[i]->audits[0];
        // Member 2 audits span 1; the honest reducers pass.
        EXPECT_EQ(v.outcome, i == 2 ? AuditOutcome::kMismatch : AuditOutcome::kPassed)
            << "member " << i << " auditing span " << v.span << ", scale " << scale << ": "
            << v.detail;
      }
    }
  }
}

TEST(ButterflyLocal, AReducerThatHidesItsContributionIsCaught) {
  Group g(3, absl::Seconds(2), [](std::shared_ptr<PartTransport> inner) {
    return std::make_shared<DishonestReducer>(inner, Group::Address(0), 1.0f,
                                              /*refuse_reveals=*/true);
  });
  g.audits = OneAuditPerSpan(3);
  AllReduceOptions o = Options();
  o.audited = true;
  Outcome out = RunRound(g, o, {1, 1, 1}, 3'000);
  ASSERT_TRUE(out.results[1].ok()) << out.results[1].status();
  ASSERT_EQ(out.results[1]->audits.size(), 1u);
  EXPECT_EQ(out.results[1]->audits[0].outcome, AuditOutcome::kRefused);
  EXPECT_EQ(out.results[2]->audits[0].outcome, AuditOutcome::kPassed);
}

TEST(ButterflyLocal, AReducerCannotTellWhichOfItsPartsAreAudited) {
  // What reaches a reducer in an audited round is exactly what reaches it
  // in an unaudited one: the copies go to the auditors only.
  uint64_t sent[2];
  for (bool audited : {false, true}) {
    Group g(3);
    if (audited) g.audits = OneAuditPerSpan(3);
    AllReduceOptions o = Options();
    o.audited = audited;
    Outcome out = RunRound(g, o, {1, 1, 1}, 6'000);
    for (auto& r : out.results) ASSERT_TRUE(r.ok()) << r.status();
    sent[audited] = g.transport->parts_sent();
  }
  // 3 copies and 3 reveals more in all, none of them to the audited span's reducer
  // but the reveal, which comes after its answer.
  EXPECT_EQ(sent[1], sent[0] + 3 + 3);
}

}  // namespace
}  // namespace dd::averaging
