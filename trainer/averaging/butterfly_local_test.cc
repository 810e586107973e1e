// The butterfly with N members as threads in one process over the in-memory
// transport (no servers, no sockets), checked against the closed-form
// weighted mean: the send schedule, the reducers' checks and the faults of a
// real round (a member that is unreachable, one whose parts vanish, one that
// registers the round late) in milliseconds.
#include <algorithm>
#include <cmath>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "trainer/averaging/butterfly.h"
#include "trainer/averaging/local_part_transport.h"

namespace dd::averaging {
namespace {

struct Group {
  explicit Group(int n, absl::Duration early_part_wait = absl::Seconds(2))
      : transport(std::make_shared<LocalPartTransport>()) {
    for (int i = 0; i < n; ++i) {
      registries.push_back(std::make_unique<ReducerRegistry>(early_part_wait));
      transport->Attach(Address(i), registries.back().get());
      members.push_back(std::make_unique<ButterflyAllReduce>(registries.back().get(), transport));
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
    return spec;
  }

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

}  // namespace
}  // namespace dd::averaging
