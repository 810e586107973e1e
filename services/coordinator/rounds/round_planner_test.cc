#include "services/coordinator/rounds/round_planner.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace dd::coordinator {
namespace {

namespace v1 = ::distdiff::coordinator::v1;

MemberInfo Info(const std::string& id) {
  return MemberInfo{id == "client" ? "" : id + ":7000"};
}

TEST(RoundPlanner, OpensARoundWhenReportsReachTheTargetBatch) {
  FakeClock clock;
  RoundPlannerOptions o;
  o.target_batch_size = 10;
  RoundPlanner planner(o, &clock);
  auto r1 = planner.Report("a", 0, 4, 1, 0, Info);
  ASSERT_TRUE(r1.ok());
  EXPECT_EQ(r1->collaboration_samples(), 4u);
  EXPECT_FALSE(planner.RoundFor("a", 0).has_value());
  ASSERT_TRUE(planner.Report("client", 0, 2, 1, 0, Info).ok());
  auto r3 = planner.Report("b", 0, 5, 1, 0, Info);
  ASSERT_TRUE(r3.ok());
  EXPECT_EQ(r3->global_step(), 1u);
  auto round = planner.RoundFor("a", 0);
  ASSERT_TRUE(round.has_value());
  EXPECT_EQ(round->global_step(), 0u);
  EXPECT_EQ(round->members_size(), 3);
  EXPECT_EQ(round->total_samples(), 11u);
  for (const auto& m : round->members()) {
    EXPECT_EQ(m.span_share(), m.peer_id() == "client" ? 0.0 : 1.0);
  }
  EXPECT_EQ(planner.RoundFor("client", 0)->round_id(), round->round_id());
  EXPECT_FALSE(planner.RoundFor("a", round->round_id()).has_value());
  EXPECT_FALSE(planner.RoundFor("nobody", 0).has_value());
}

// A peer announces itself with 0 samples as it starts a step; it is a
// member of that step's round even when faster peers fill the target
// before its first report with samples.
TEST(RoundPlanner, APeerThatAnnouncedWithNoSamplesYetIsAMember) {
  FakeClock clock;
  RoundPlannerOptions o;
  o.target_batch_size = 8;
  RoundPlanner planner(o, &clock);
  ASSERT_TRUE(planner.Report("slow", 0, 0, 1, 0, Info).ok());
  auto r = planner.Report("fast", 0, 8, 1, 0, Info);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->global_step(), 1u);
  auto round = planner.RoundFor("slow", 0);
  ASSERT_TRUE(round.has_value());
  EXPECT_EQ(round->members_size(), 2);
  EXPECT_EQ(round->total_samples(), 8u);
}

// Members report how a round ended for them; the round is APPLIED when
// every member applied it (its duration the slowest member's averaging),
// FAILED at the first failure, or when a member stays silent past the
// deadline plus the report TTL. Every transition reaches the listener once.
TEST(RoundPlanner, RoundsResolveFromTheirMembersResults) {
  FakeClock clock;
  RoundPlannerOptions o;
  o.target_batch_size = 2;
  o.round_timeout = absl::Seconds(10);
  o.report_ttl = absl::Seconds(5);
  std::vector<std::string> events;
  o.on_round_event = [&events](const RoundEvent& e) {
    const char* kind = e.kind == RoundEvent::Kind::kOpened    ? "opened"
                       : e.kind == RoundEvent::Kind::kApplied ? "applied"
                                                              : "failed";
    events.push_back(absl::StrCat(e.round_id, " ", kind, " ", e.duration_seconds));
  };
  RoundPlanner planner(o, &clock);
  auto open_round = [&](uint64_t step) {
    ASSERT_TRUE(planner.Report("a", step, 1, 1, 0, Info).ok());
    ASSERT_TRUE(planner.Report("b", step, 1, 1, 0, Info).ok());
  };
  ASSERT_NO_FATAL_FAILURE(open_round(0));  // round 1
  ASSERT_TRUE(planner.RecordResult("a", 1, true, 1.5).ok());
  EXPECT_EQ(planner.Recent()[0].outcome(), v1::ROUND_PENDING);
  ASSERT_TRUE(planner.RecordResult("b", 1, true, 2.5).ok());
  ASSERT_TRUE(planner.RecordResult("b", 1, false, 9).ok());  // a second result is ignored
  v1::Round r1 = planner.Recent()[0];
  EXPECT_EQ(r1.outcome(), v1::ROUND_APPLIED);
  EXPECT_EQ(r1.duration_seconds(), 2.5);
  EXPECT_EQ(r1.members(1).averaging_seconds(), 2.5);

  ASSERT_NO_FATAL_FAILURE(open_round(1));  // round 2: b fails
  ASSERT_TRUE(planner.RecordResult("b", 2, false, 3).ok());
  EXPECT_EQ(planner.Recent()[0].outcome(), v1::ROUND_FAILED);
  EXPECT_EQ(planner.Recent()[0].members(1).outcome(), v1::ROUND_FAILED);

  ASSERT_NO_FATAL_FAILURE(open_round(2));  // round 3: b never reports
  ASSERT_TRUE(planner.RecordResult("a", 3, true, 1).ok());
  clock.Advance(absl::Seconds(15));  // the deadline plus the TTL, exactly: still pending
  EXPECT_EQ(planner.Recent()[0].outcome(), v1::ROUND_PENDING);
  clock.Advance(absl::Milliseconds(1));
  EXPECT_EQ(planner.Recent()[0].outcome(), v1::ROUND_FAILED);

  EXPECT_EQ(planner.RecordResult("c", 3, true, 1).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(planner.RecordResult("a", 9, true, 1).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(planner.RecordResult("a", 3, true, -1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(planner.RecordResult("a", 3, true, NAN).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(events, (std::vector<std::string>{"1 opened 0", "1 applied 2.5", "2 opened 0",
                                              "2 failed 0", "3 opened 0", "3 failed 0"}));
}

TEST(RoundPlanner, StaleStepsAndStaleReportsDoNotCount) {
  FakeClock clock;
  RoundPlannerOptions o;
  o.target_batch_size = 10;
  o.report_ttl = absl::Seconds(30);
  RoundPlanner planner(o, &clock);
  EXPECT_EQ(planner.Report("a", 3, 4, 1, 0, Info).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(planner.Report("a", 0, 8, 1, 0, Info).ok());
  clock.Advance(absl::Seconds(31));  // a's report expires
  auto r = planner.Report("b", 0, 5, 1, 0, Info);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->collaboration_samples(), 5u);
  EXPECT_EQ(r->global_step(), 0u);
  EXPECT_EQ(planner.Report("b", 0, 5, -1, 0, Info).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RoundPlanner, BandwidthSharesWhenReported) {
  FakeClock clock;
  RoundPlannerOptions o;
  o.target_batch_size = 2;
  RoundPlanner planner(o, &clock);
  ASSERT_TRUE(planner.Report("a", 0, 1, 1, 100, Info).ok());
  ASSERT_TRUE(planner.Report("b", 0, 1, 1, 300, Info).ok());
  auto round = planner.RoundFor("a", 0);
  ASSERT_TRUE(round.has_value());
  EXPECT_EQ(round->members(0).span_share(), 100);
  EXPECT_EQ(round->members(1).span_share(), 300);
  EXPECT_EQ(planner.Recent().size(), 1u);
}

TEST(RoundPlanner, OneClaimedBandwidthCannotTakeTheWholeVector) {
  // The attack: honest peers report no bandwidth; one claims a huge one.
  // Before, it got span share 1 and everyone else 0.
  std::vector<double> shares = SpanShares({0, 0, 1e9});
  EXPECT_EQ(shares, (std::vector<double>{1e9, 1e9, 1e9}));
  // Among reporting peers, claims are held within 4x of the median.
  shares = SpanShares({100, 120, 80, 1e6, 0.001});
  EXPECT_EQ(shares[0], 100);
  EXPECT_EQ(shares[1], 120);
  EXPECT_EQ(shares[2], 80);
  EXPECT_EQ(shares[3], 400);
  EXPECT_EQ(shares[4], 25);
  EXPECT_EQ(SpanShares({0, 0}), (std::vector<double>{1, 1}));
}

TEST(RoundPlanner, NoRoundOpensForAStepThatCouldNotBePersisted) {
  FakeClock clock;
  RoundPlannerOptions o;
  o.target_batch_size = 2;
  bool disk_full = true;
  o.persist_step = [&](uint64_t) {
    return disk_full ? absl::UnavailableError("disk full") : absl::OkStatus();
  };
  RoundPlanner planner(o, &clock);
  auto failed = planner.Report("a", 0, 2, 1, 0, Info);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(failed.status().message().find("disk full"), std::string::npos) << failed.status();
  EXPECT_EQ(planner.global_step(), 0u);
  EXPECT_FALSE(planner.RoundFor("a", 0).has_value());
  disk_full = false;
  ASSERT_TRUE(planner.Report("a", 0, 2, 1, 0, Info).ok());
  EXPECT_EQ(planner.global_step(), 1u);
  EXPECT_TRUE(planner.RoundFor("a", 0).has_value());
}

}  // namespace
}  // namespace dd::coordinator

namespace dd::coordinator {
namespace {

TEST(RoundPlanner, StartsAtTheGivenStepAndReportsEachNewOne) {
  FakeClock clock;
  RoundPlannerOptions o;
  o.target_batch_size = 2;
  o.initial_global_step = 7;
  std::vector<uint64_t> persisted;
  o.persist_step = [&](uint64_t s) {
    persisted.push_back(s);
    return absl::OkStatus();
  };
  RoundPlanner planner(o, &clock);
  EXPECT_EQ(planner.global_step(), 7u);
  EXPECT_EQ(planner.Report("a", 0, 2, 1, 0, Info).status().code(),
            absl::StatusCode::kFailedPrecondition);  // a peer still at step 0 is stale
  ASSERT_TRUE(planner.Report("a", 7, 2, 1, 0, Info).ok());
  EXPECT_EQ(planner.global_step(), 8u);
  EXPECT_EQ(persisted, (std::vector<uint64_t>{8}));
  // A restarted planner's rounds have new ids: a peer that saw the rounds
  // of steps 0-6 (ids 1-7) before the restart sees this one.
  auto round = planner.RoundFor("a", 7);
  ASSERT_TRUE(round.has_value());
  EXPECT_EQ(round->round_id(), 8u);
  EXPECT_EQ(round->global_step(), 7u);
}

}  // namespace
}  // namespace dd::coordinator
