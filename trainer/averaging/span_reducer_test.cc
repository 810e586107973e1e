#include "trainer/averaging/span_reducer.h"

#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace dd::averaging {
namespace {

using Outcome = absl::StatusOr<std::shared_ptr<const PartOutcome>>;

ReducerOptions Options(uint64_t length, uint32_t part, uint32_t members) {
  ReducerOptions o;
  o.span_length = length;
  o.part_elements = part;
  o.num_members = members;
  return o;
}

TEST(SpanReducer, PartIsReducedWhenEveryMemberGaveIt) {
  SpanReducer r(Options(5, 3, 2));
  EXPECT_EQ(r.num_parts(), 2u);
  EXPECT_EQ(r.PartLength(1), 2u);
  std::vector<Outcome> got;
  std::vector<float> a = {1, 2, 3}, b = {3, 4, 5};
  absl::Time now = absl::Now();
  r.Contribute(0, 0, a.data(), 3, 1.0, now, [&](Outcome o) { got.push_back(o); });
  EXPECT_TRUE(got.empty());
  r.Contribute(1, 0, b.data(), 3, 3.0, now, [&](Outcome o) { got.push_back(o); });
  ASSERT_EQ(got.size(), 2u);
  ASSERT_TRUE(got[0].ok());
  EXPECT_EQ(got[0].value(), got[1].value());  // the same outcome object for both
  EXPECT_EQ((*got[0])->values, (std::vector<float>{2.5f, 3.5f, 4.5f}));
  EXPECT_EQ((*got[0])->contributors, 2u);
}

TEST(SpanReducer, TheOutcomeDoesNotDependOnTheOrderContributionsArrive) {
  // Values of very different magnitudes: a sum in arrival order would round
  // differently. The reducer sums in member order, as an auditor does.
  const uint32_t n = 4096;
  std::vector<std::vector<float>> rows(5, std::vector<float>(n));
  for (uint32_t s = 0; s < 5; ++s) {
    for (uint32_t j = 0; j < n; ++j) rows[s][j] = std::ldexp(1.0f + 0.37f * j, (s * 11) % 40 - 20);
  }
  const std::vector<double> weights = {1, 3, 7, 2, 5};
  std::vector<std::string> encoded;
  for (const std::vector<uint32_t>& order :
       {std::vector<uint32_t>{0, 1, 2, 3, 4}, {4, 2, 0, 3, 1}, {3, 4, 1, 0, 2}}) {
    ReducerOptions o = Options(n, n, 5);
    o.codec = CodecId::kFp16;
    SpanReducer r(o);
    std::shared_ptr<const PartOutcome> out;
    for (uint32_t s : order) {
      r.Contribute(s, 0, rows[s].data(), n, weights[s], absl::Now(), [&](Outcome got) {
        if (got.ok()) out = *got;
      });
    }
    ASSERT_NE(out, nullptr);
    EXPECT_EQ(out->contributor_indexes, (std::vector<uint32_t>{0, 1, 2, 3, 4}));
    encoded.push_back(out->encoded);
  }
  EXPECT_EQ(encoded[1], encoded[0]);
  EXPECT_EQ(encoded[2], encoded[0]);
  // And it is AggregateRows of the rows in member order.
  std::vector<const std::vector<float>*> ptrs;
  for (auto& r : rows) ptrs.push_back(&r);
  std::vector<float> mean = AggregateRows(ptrs, weights, Aggregation::kMean, 1.0, 20);
  std::string expected;
  CodecFor(CodecId::kFp16).Encode(mean.data(), n, &expected);
  EXPECT_EQ(encoded[0], expected);
}

TEST(SpanReducer, KeptLocalContributionsAreRevealedOnlyOnceReduced) {
  ReducerOptions o = Options(6, 3, 2);
  o.local_sender = 1;
  o.keep_local_inputs = true;
  SpanReducer r(o);
  std::vector<float> mine = {1, 2, 3}, theirs = {5, 6, 7};
  r.Contribute(1, 0, mine.data(), 3, 2.0, absl::Now(), [](Outcome) {});
  EXPECT_TRUE(absl::IsNotFound(r.LocalContribution(0).status()));  // not reduced yet
  r.Contribute(0, 0, theirs.data(), 3, 1.0, absl::Now(), [](Outcome) {});
  auto kept = r.LocalContribution(0);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->first, mine);
  EXPECT_EQ(kept->second, 2.0);
  EXPECT_TRUE(absl::IsNotFound(r.LocalContribution(1).status()));  // not a part start
  EXPECT_TRUE(absl::IsNotFound(r.LocalContribution(3).status()));  // never given
  // Without the option nothing is kept.
  SpanReducer plain(Options(3, 3, 1));
  plain.Contribute(0, 0, mine.data(), 3, 1.0, absl::Now(), [](Outcome) {});
  EXPECT_TRUE(absl::IsNotFound(plain.LocalContribution(0).status()));
}

TEST(SpanReducer, BadContributionsAreRefusedAndTheSenderExcluded) {
  SpanReducer r(Options(6, 3, 3));
  std::vector<float> v = {1, 1, 1};
  absl::Time now = absl::Now();
  auto expect = [&](uint32_t s, uint64_t off, size_t n, double w, absl::StatusCode code) {
    absl::Status got;
    r.Contribute(s, off, v.data(), n, w, now, [&](Outcome o) { got = o.status(); });
    EXPECT_EQ(got.code(), code) << s << " " << off << " " << n;
  };
  expect(5, 0, 3, 1, absl::StatusCode::kOutOfRange);
  expect(0, 1, 3, 1, absl::StatusCode::kInvalidArgument);  // not a part start
  expect(1, 0, 2, 1, absl::StatusCode::kInvalidArgument);  // wrong count -> 1 excluded
  expect(1, 3, 3, 1, absl::StatusCode::kFailedPrecondition);
  std::vector<float> nan = {1, NAN, 1};
  absl::Status s;
  r.Contribute(2, 0, nan.data(), 3, 1, now, [&](Outcome o) { s = o.status(); });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  // Member 0 is now the only one left: its parts reduce on their own.
  std::vector<Outcome> done;
  r.Contribute(0, 0, v.data(), 3, 2.0, now, [&](Outcome o) { done.push_back(o); });
  r.Contribute(0, 3, v.data(), 3, 2.0, now, [&](Outcome o) { done.push_back(o); });
  ASSERT_EQ(done.size(), 2u);
  EXPECT_TRUE((*done[0])->averaged);
  EXPECT_TRUE(r.AllReduced());
  absl::Status dup;
  r.Contribute(0, 0, v.data(), 3, 2.0, now, [&](Outcome o) { dup = o.status(); });
  EXPECT_EQ(dup.code(), absl::StatusCode::kInvalidArgument);
}

TEST(SpanReducer, StalledSenderIsExcludedAfterTheTimeout) {
  absl::Time t0 = absl::FromUnixSeconds(1000);
  SpanReducer r(Options(3, 3, 2), t0);
  std::vector<float> v = {2, 2, 2};
  std::vector<Outcome> got;
  r.Contribute(0, 0, v.data(), 3, 1, t0, [&](Outcome o) { got.push_back(o); });
  EXPECT_EQ(r.ExcludeStalled(t0 + absl::Seconds(1), absl::Seconds(5)), 0);
  EXPECT_TRUE(got.empty());
  EXPECT_EQ(r.ExcludeStalled(t0 + absl::Seconds(6), absl::Seconds(5)), 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ((*got[0])->values, v);
  EXPECT_EQ((*got[0])->contributors, 1u);
}

// A sender whose parts wait on a slow member is blocked by its in-flight
// window, not stalled: only the slow member can time out, and the others'
// silence counts from when their waiting parts were reduced.
TEST(SpanReducer, SendersWaitingOnASlowerMemberAreNotStalled) {
  absl::Time t0 = absl::FromUnixSeconds(1000);
  SpanReducer r(Options(6, 2, 3), t0);  // 3 parts, 3 members
  std::vector<float> v = {1, 1};
  int answered = 0;
  auto count = [&](Outcome) { ++answered; };
  for (uint32_t s : {0u, 1u}) {
    r.Contribute(s, 0, v.data(), 2, 1, t0, count);
    r.Contribute(s, 2, v.data(), 2, 1, t0, count);
  }
  r.Contribute(2, 0, v.data(), 2, 1, t0 + absl::Seconds(3), count);  // slow
  EXPECT_EQ(answered, 3);  // part 0 reduced
  // Members 0 and 1 have said nothing for 7.5 s, but part 1 waits on member 2.
  EXPECT_EQ(r.ExcludeStalled(t0 + absl::Milliseconds(7500), absl::Seconds(5)), 0);
  // Member 2 has been silent for 5.5 s: excluded, part 1 reduced without it.
  EXPECT_EQ(r.ExcludeStalled(t0 + absl::Milliseconds(8500), absl::Seconds(5)), 1);
  EXPECT_EQ(answered, 5);
  // Members 0 and 1 now owe part 2; their silence starts at 8.5 s.
  EXPECT_EQ(r.ExcludeStalled(t0 + absl::Seconds(10), absl::Seconds(5)), 0);
  EXPECT_EQ(r.ExcludeStalled(t0 + absl::Seconds(14), absl::Seconds(5)), 2);
}

TEST(SpanReducer, TheLocalSenderIsNeverExcludedAsStalled) {
  // The owner contributes in step with its own sending, which may pause for
  // longer than the sender timeout while its other reducers are slow.
  absl::Time t0 = absl::FromUnixSeconds(1000);
  ReducerOptions o = Options(4, 2, 2);  // 2 parts, 2 members
  o.local_sender = 0;
  SpanReducer r(o, t0);
  std::vector<float> v = {1, 1};
  r.Contribute(1, 0, v.data(), 2, 1, t0, [](Outcome) {});
  r.Contribute(0, 0, v.data(), 2, 1, t0, [](Outcome) {});
  // Both silent for 6 s with part 1 still owed: only member 1 is excluded.
  EXPECT_EQ(r.ExcludeStalled(t0 + absl::Seconds(6), absl::Seconds(5)), 1);
  std::vector<Outcome> got;
  r.Contribute(0, 2, v.data(), 2, 1, t0 + absl::Seconds(7), [&](Outcome o) { got.push_back(o); });
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(got[0].ok());
  EXPECT_EQ((*got[0])->contributors, 1u);
}

TEST(SpanReducer, FinishReducesWhatIsThereAndZeroWeightIsNotAveraged) {
  SpanReducer r(Options(4, 2, 2));
  std::vector<float> v = {5, 5};
  std::vector<Outcome> got;
  r.Contribute(0, 0, v.data(), 2, 0.0, absl::Now(), [&](Outcome o) { got.push_back(o); });
  r.Finish();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_FALSE((*got[0])->averaged);
  EXPECT_TRUE(r.AllReduced());
}

TEST(ClipToL2Norm, ScalesDownOnlyAboveTheBound) {
  std::vector<float> v = {3, 4};  // norm 5
  EXPECT_DOUBLE_EQ(ClipToL2Norm(v.data(), v.size(), 10), 5);
  EXPECT_EQ(v, (std::vector<float>{3, 4}));
  EXPECT_DOUBLE_EQ(ClipToL2Norm(v.data(), v.size(), 1), 5);
  EXPECT_FLOAT_EQ(v[0], 0.6f);
  EXPECT_FLOAT_EQ(v[1], 0.8f);
  std::vector<float> huge = {3e30f, 4e30f};
  ClipToL2Norm(huge.data(), huge.size(), 0);  // no bound
  EXPECT_EQ(huge[0], 3e30f);
  ClipToL2Norm(huge.data(), huge.size(), 5);
  EXPECT_FLOAT_EQ(huge[0], 3);
  EXPECT_FLOAT_EQ(huge[1], 4);
}

TEST(CenteredClip, ClipsAnOutlierAndEqualsTheMeanWhenAllAreClose) {
  std::vector<float> a = {1, 1}, b = {1.2f, 0.8f}, c = {100, -100};
  auto robust = CenteredClip({&a, &b, &c}, {1, 1, 1}, 1.0, 20);
  EXPECT_NEAR(robust[0], 1.1, 0.5);
  EXPECT_NEAR(robust[1], 0.9, 0.5);
  auto close = CenteredClip({&a, &b}, {1, 3}, 10.0, 5);
  EXPECT_NEAR(close[0], 1.15, 1e-5);
  EXPECT_NEAR(close[1], 0.85, 1e-5);
}

}  // namespace
}  // namespace dd::averaging
