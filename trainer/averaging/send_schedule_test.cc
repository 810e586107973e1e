// SendSchedule on a made-up clock: windows, the first-part probe, retries of
// NOT_FOUND with their back-off and limit, failures, the upload cap, the
// own parts that go alongside, and the deadline.
#include "trainer/averaging/send_schedule.h"

#include "gtest/gtest.h"

namespace dd::averaging {
namespace {

using Answer = SendSchedule::Answer;

const absl::Time kStart = absl::FromUnixSeconds(1000);

SendScheduleOptions Options() {
  SendScheduleOptions o;
  o.parts_in_flight = 3;
  o.start = kStart;
  o.reducer_timeout = absl::Seconds(20);
  return o;
}

absl::Time At(double seconds) { return kStart + absl::Seconds(seconds); }

TEST(SendSchedule, OnePartProbesEachRemoteThenTheWindowOpensOnItsFirstAnswer) {
  SendSchedule s(Options(), {{1, 10}, {2, 10}}, 10);
  EXPECT_EQ(s.TakeSends(At(0)), (std::vector<PartRef>{{1, 0}, {2, 0}}));
  EXPECT_TRUE(s.TakeSends(At(0.01)).empty());  // probes unanswered
  EXPECT_FALSE(s.OnAnswer({1, 0}, Answer::kAnswered, At(0.02)));
  // Member 1 confirmed: a window of 3; member 2 still probing.
  EXPECT_EQ(s.TakeSends(At(0.02)), (std::vector<PartRef>{{1, 1}, {1, 2}, {1, 3}}));
  EXPECT_EQ(s.in_flight(1), 3u);
  EXPECT_EQ(s.in_flight(2), 1u);
}

TEST(SendSchedule, AProbeUnansweredForAMomentMeansTheRemoteHasTheRound) {
  SendSchedule s(Options(), {{1, 10}}, 0);
  EXPECT_EQ(s.TakeSends(At(0)).size(), 1u);
  EXPECT_TRUE(s.TakeSends(At(0.04)).empty());
  // NOT_FOUND comes back at once; a reducer holding the part is working.
  EXPECT_EQ(s.TakeSends(At(0.06)), (std::vector<PartRef>{{1, 1}, {1, 2}}));
}

TEST(SendSchedule, NotFoundIsRetriedWithDoublingDelaysUntilTheReducerTimeout) {
  SendSchedule s(Options(), {{1, 2}}, 0);
  ASSERT_EQ(s.TakeSends(At(0)).size(), 1u);
  double t = 0;
  const double expected_delays[] = {0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.5, 0.5};
  for (double delay : expected_delays) {
    EXPECT_FALSE(s.OnAnswer({1, 0}, Answer::kNotRegistered, At(t)));
    EXPECT_TRUE(s.TakeSends(At(t + delay - 0.001)).empty()) << delay;
    EXPECT_EQ(s.TakeSends(At(t + delay)), (std::vector<PartRef>{{1, 0}})) << delay;
    t += delay;
  }
  EXPECT_FALSE(s.RemotesDone());
  // Past start + reducer_timeout a NOT_FOUND gives the remote up.
  EXPECT_TRUE(s.OnAnswer({1, 0}, Answer::kNotRegistered, At(20.5)));
  EXPECT_TRUE(s.failed(1));
  EXPECT_TRUE(s.TakeSends(At(21)).empty());
  EXPECT_TRUE(s.RemotesDone());
}

TEST(SendSchedule, AFailedRemoteGetsNothingMoreAndOnlyItsAnswersInFlightAreAwaited) {
  SendSchedule s(Options(), {{1, 10}, {2, 4}}, 0);
  s.TakeSends(At(0));
  s.OnAnswer({1, 0}, Answer::kAnswered, At(0.01));
  s.OnAnswer({2, 0}, Answer::kAnswered, At(0.01));
  auto sends = s.TakeSends(At(0.01));
  ASSERT_EQ(sends.size(), 6u);
  EXPECT_TRUE(s.OnAnswer({1, 1}, Answer::kFailed, At(0.02)));
  EXPECT_FALSE(s.OnAnswer({1, 2}, Answer::kFailed, At(0.02)));  // said once
  EXPECT_TRUE(s.failed(1));
  EXPECT_FALSE(s.failed(2));
  auto more = s.TakeSends(At(0.03));
  for (const PartRef& p : more) EXPECT_EQ(p.member, 2u);
  EXPECT_FALSE(s.RemotesDone());  // member 1's part 3 is still in flight
  s.OnAnswer({1, 3}, Answer::kAnswered, At(0.04));
  for (uint32_t p = 1; p < 4; ++p) s.OnAnswer({2, p}, Answer::kAnswered, At(0.05));
  EXPECT_TRUE(s.RemotesDone());
}

TEST(SendSchedule, TheUploadCapLetsOnePartAtATimeWithinCapTimesElapsed) {
  SendScheduleOptions o = Options();
  o.max_send_mbps = 8;  // 1 MB/s
  o.parts_in_flight = 100;
  SendSchedule s(o, {{1, 100}}, 0);
  ASSERT_EQ(s.TakeSends(At(0)).size(), 1u);
  s.RecordSent(500'000);
  s.OnAnswer({1, 0}, Answer::kAnswered, At(0.1));
  EXPECT_TRUE(s.TakeSends(At(0.4)).empty());  // 0.4 s allows 400 kB
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(s.TakeSends(At(0.5)).size(), 1u) << i;  // one per call
    s.RecordSent(i == 0 ? 0 : 250'000);
  }
  EXPECT_TRUE(s.TakeSends(At(0.7)).empty());
  EXPECT_EQ(s.TakeSends(At(0.75)).size(), 1u);
  EXPECT_EQ(s.bytes_sent(), 750'000u);
}

TEST(SendSchedule, OwnPartsGoTwoWindowsAheadOfTheSlowestRemoteThenAllAtTheEnd) {
  SendSchedule s(Options(), {{1, 10}, {2, 20}}, 10);
  EXPECT_EQ(s.TakeOwnParts(), (std::pair<uint32_t, uint32_t>{0, 6}));
  EXPECT_EQ(s.TakeOwnParts(), (std::pair<uint32_t, uint32_t>{6, 6}));
  // Every part of every remote taken: the rest of the own span.
  double t = 0;
  while (true) {
    auto sends = s.TakeSends(At(t));
    if (sends.empty() && s.RemotesDone()) break;
    for (const PartRef& p : sends) s.OnAnswer(p, Answer::kAnswered, At(t));
    t += 0.1;
    ASSERT_LT(t, 100);
  }
  EXPECT_EQ(s.TakeOwnParts(), (std::pair<uint32_t, uint32_t>{6, 10}));
}

TEST(SendSchedule, TheDeadlineStopsSendingAndGivesEveryRemoteUp) {
  SendSchedule s(Options(), {{1, 10}, {2, 10}}, 0);
  s.TakeSends(At(0));
  EXPECT_TRUE(s.PassDeadline());
  EXPECT_FALSE(s.PassDeadline());
  EXPECT_TRUE(s.TakeSends(At(1)).empty());
  EXPECT_TRUE(s.failed(1) && s.failed(2));
  EXPECT_FALSE(s.RemotesDone());  // the probes are still in flight
  s.OnAnswer({1, 0}, Answer::kNotRegistered, At(1));  // not retried now
  s.OnAnswer({2, 0}, Answer::kAnswered, At(1));
  EXPECT_TRUE(s.RemotesDone());
  EXPECT_TRUE(s.TakeSends(At(2)).empty());
}

TEST(SendSchedule, EmptySpansAreNotRemotes) {
  SendSchedule s(Options(), {{1, 0}, {2, 1}}, 3);
  EXPECT_EQ(s.TakeSends(At(0)), (std::vector<PartRef>{{2, 0}}));
  s.OnAnswer({2, 0}, Answer::kAnswered, At(0));
  EXPECT_TRUE(s.RemotesDone());
  EXPECT_EQ(s.TakeOwnParts(), (std::pair<uint32_t, uint32_t>{0, 3}));
}

}  // namespace
}  // namespace dd::averaging
