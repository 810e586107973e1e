#include "services/coordinator/rounds/round_planner.h"

#include <cmath>
#include <memory>
#include <set>

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
  // Two members: the honest one's report is the median, so the claim is
  // held to 4x of it (the mean of the two would have let it take 8/9).
  EXPECT_EQ(SpanShares({100, 1e12}), (std::vector<double>{100, 400}));
  EXPECT_EQ(SpanShares({100, 200, 300, 1e12}), (std::vector<double>{100, 200, 300, 800}));
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


// Members a, b, c (reducers) and a client-only member; 2 audits a span.
RoundPlanner* AuditedRound(FakeClock* clock, std::unique_ptr<RoundPlanner>* keep) {
  RoundPlannerOptions o;
  o.target_batch_size = 4;
  o.reducer_audits = 2;
  *keep = std::make_unique<RoundPlanner>(o, clock);
  for (const char* id : {"a", "b", "c", "client"}) {
    EXPECT_TRUE((*keep)->Report(id, 0, 1, 1, 0, Info).ok());
  }
  return keep->get();
}

TEST(RoundPlanner, EveryReducersSpanIsAuditedByAnotherReducerUnknownToIt) {
  FakeClock clock;
  std::unique_ptr<RoundPlanner> keep;
  RoundPlanner* planner = AuditedRound(&clock, &keep);
  auto full = planner->Recent();
  ASSERT_EQ(full.size(), 1u);
  EXPECT_TRUE(full[0].audited());
  EXPECT_EQ(full[0].audits_pending(), 6u);
  EXPECT_EQ(full[0].audits_size(), 0) << "listed while verdicts are pending";
  for (int i = 0; i < 4; ++i) {
    const std::string id = full[0].members(i).peer_id();
    auto mine = planner->RoundFor(id, 0);
    ASSERT_TRUE(mine.has_value());
    // 3 reducers x 2 audits, less those of its own span.
    EXPECT_EQ(mine->audits_size(), id == "client" ? 6 : 4) << id;
    std::set<std::pair<uint32_t, uint32_t>> pairs;
    for (const auto& a : mine->audits()) {
      EXPECT_TRUE(pairs.insert({a.span(), a.auditor()}).second) << "one auditor audits a span once";
      EXPECT_NE(a.span(), static_cast<uint32_t>(i)) << id << " learns of its own audit";
      EXPECT_NE(a.auditor(), a.span());
      EXPECT_NE(full[0].members(a.auditor()).peer_id(), "client") << "an auditor gets copies";
      EXPECT_NE(full[0].members(a.span()).peer_id(), "client") << "a client reduces nothing";
      EXPECT_EQ(a.verdict(), v1::AUDIT_PENDING);
    }
  }
}

TEST(RoundPlanner, VerdictsComeOnlyFromTheAssignedAuditorsAndAMismatchFailsTheRound) {
  FakeClock clock;
  std::unique_ptr<RoundPlanner> keep;
  RoundPlanner* planner = AuditedRound(&clock, &keep);
  const v1::Round round = *planner->RoundFor("client", 0);  // sees every audit
  auto report = [](uint32_t span, v1::AuditVerdict verdict) {
    v1::AuditReport r;
    r.set_span(span);
    r.set_verdict(verdict);
    return r;
  };
  const uint64_t id = round.round_id();
  // Not a member; a verdict on an audit not assigned; a PENDING verdict.
  EXPECT_TRUE(absl::IsPermissionDenied(planner->RecordAudits("nobody", id, {}).status()));
  const v1::RoundAudit& first = round.audits(0);
  const std::string auditor = round.members(first.auditor()).peer_id();
  const std::string reducer = round.members(first.span()).peer_id();
  EXPECT_TRUE(absl::IsPermissionDenied(
      planner->RecordAudits(reducer, id, {report(first.span(), v1::AUDIT_PASSED)}).status()))
      << "a reducer cannot pass its own audit";
  EXPECT_TRUE(absl::IsInvalidArgument(
      planner->RecordAudits(auditor, id, {report(first.span(), v1::AUDIT_PENDING)}).status()));
  EXPECT_TRUE(absl::IsNotFound(planner->RecordAudits(auditor, id + 5, {}).status()));
  // Every auditor passes its audits but one, which finds a mismatch.
  bool mismatch_sent = false;
  for (const v1::RoundAudit& a : round.audits()) {
    const std::string who = round.members(a.auditor()).peer_id();
    const bool bad = !mismatch_sent;
    mismatch_sent = true;
    auto status = planner->RecordAudits(
        who, id, {report(a.span(), bad ? v1::AUDIT_MISMATCH : v1::AUDIT_PASSED)});
    ASSERT_TRUE(status.ok()) << status.status();
    EXPECT_TRUE(status->failed);
    if (bad) {
      ASSERT_EQ(status->accusations.size(), 1u);
      EXPECT_EQ(status->accusations[0].first, reducer);
      EXPECT_EQ(status->accusations[0].second, auditor);
    }
  }
  auto settled = planner->RecordAudits("client", id, {});
  ASSERT_TRUE(settled.ok());
  EXPECT_EQ(settled->pending, 0u);
  EXPECT_EQ(settled->failed_spans, std::vector<uint32_t>{first.span()});
  // Now listed, with the verdicts.
  auto listed = planner->Recent();
  EXPECT_EQ(listed[0].audits_size(), 6);
  EXPECT_TRUE(listed[0].audit_failed());
}

TEST(RoundPlanner, RoundsWithFewerThanTwoReducersAreNotAudited) {
  FakeClock clock;
  RoundPlannerOptions o;
  o.target_batch_size = 2;
  o.reducer_audits = 1;
  RoundPlanner planner(o, &clock);
  ASSERT_TRUE(planner.Report("a", 0, 1, 1, 0, Info).ok());
  ASSERT_TRUE(planner.Report("client", 0, 1, 1, 0, Info).ok());
  auto round = planner.RoundFor("a", 0);
  ASSERT_TRUE(round.has_value());
  EXPECT_FALSE(round->audited());
  EXPECT_EQ(round->audits_size(), 0);
}

// A member that applied a step and died before its hash report came would
// hold the confirmation back for good (1 of 2 is no majority); once it has
// departed, the members that reported decide.
TEST(RoundPlanner, AMemberThatDepartedBeforeReportingItsHashDoesNotBlockTheConfirmation) {
  FakeClock clock;
  RoundPlannerOptions o;
  o.target_batch_size = 2;
  RoundPlanner planner(o, &clock);
  for (const char* id : {"a", "b"}) ASSERT_TRUE(planner.Report(id, 0, 1, 1, 0, Info).ok());
  ASSERT_TRUE(planner.RecordResult("a", 1, true, 1).ok());
  ASSERT_TRUE(planner.RecordResult("b", 1, true, 1).ok());
  planner.JudgeHash("a", 1, "aaaa");
  EXPECT_FALSE(planner.ConfirmedHash(1).confirmed()) << "b applied it and has not said";
  planner.Forget("b", /*hashes=*/false);  // b fell silent and was evicted
  v1::GetStepHashResponse h = planner.ConfirmedHash(1);
  EXPECT_TRUE(h.confirmed()) << h.why();
  EXPECT_EQ(h.hash(), "aaaa");
  EXPECT_EQ(h.eligible(), 1u);
  // A departed member's vote, once given, still counts.
  for (const char* id : {"a", "c"}) ASSERT_TRUE(planner.Report(id, 1, 1, 1, 0, Info).ok());
  ASSERT_TRUE(planner.RecordResult("c", 2, true, 1).ok());
  planner.JudgeHash("c", 2, "c2");
  planner.Forget("c", /*hashes=*/false);
  h = planner.ConfirmedHash(2);
  EXPECT_FALSE(h.confirmed()) << "a applied it and has not said; c said c2";
  EXPECT_EQ(h.eligible(), 2u);
  // A member back with a new incarnation counts again.
  planner.Forget("b");
  EXPECT_FALSE(planner.ConfirmedHash(1).confirmed());
}

// An outvoted member drops what it trained to resynchronise: a round opened
// on those samples would wait for parts it never sends.
TEST(RoundPlanner, AnOutvotedMembersSamplesOpenNoRound) {
  FakeClock clock;
  RoundPlannerOptions o;
  o.target_batch_size = 3;
  RoundPlanner planner(o, &clock);
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(planner.Report(id, 0, 1, 1, 0, Info).ok());
  ASSERT_EQ(planner.global_step(), 1u);
  planner.JudgeHash("a", 1, "a1");
  planner.JudgeHash("b", 1, "a1");
  // c reports toward step 2, then its hash of step 1 is outvoted.
  ASSERT_TRUE(planner.Report("c", 1, 1, 1, 0, Info).ok());
  ASSERT_TRUE(planner.Report("a", 1, 1, 1, 0, Info).ok());
  EXPECT_TRUE(planner.JudgeHash("c", 1, "c1").diverged);
  ASSERT_TRUE(planner.Report("b", 1, 1, 1, 0, Info).ok());
  EXPECT_EQ(planner.global_step(), 1u) << "a round opened on the outvoted member's samples";
  // Resynchronised, c reports again and the round opens with it.
  EXPECT_FALSE(planner.JudgeHash("c", 1, "a1").diverged);
  ASSERT_TRUE(planner.Report("c", 1, 1, 1, 0, Info).ok());
  ASSERT_EQ(planner.global_step(), 2u);
  auto round = planner.RoundFor("c", 0);
  ASSERT_TRUE(round.has_value());
  EXPECT_EQ(round->round_id(), 2u);
  EXPECT_EQ(round->members_size(), 3);
}

TEST(RoundPlanner, AStepsHashIsConfirmedByMostOfTheMembersThatAppliedIt) {
  FakeClock clock;
  RoundPlannerOptions o;
  o.target_batch_size = 3;
  RoundPlanner planner(o, &clock);
  auto step = [&](uint64_t s) {
    for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(planner.Report(id, s, 1, 1, 0, Info).ok());
  };
  ASSERT_NO_FATAL_FAILURE(step(0));  // round 1 makes step 1
  EXPECT_FALSE(planner.ConfirmedHash(1).confirmed());
  planner.JudgeHash("a", 1, "aaaa");
  EXPECT_FALSE(planner.ConfirmedHash(1).confirmed()) << "one of three";
  planner.JudgeHash("c", 1, "cccc");  // a liar, or a diverged member
  planner.JudgeHash("b", 1, "aaaa");
  v1::GetStepHashResponse h = planner.ConfirmedHash(1);
  EXPECT_TRUE(h.confirmed()) << h.why();
  EXPECT_EQ(h.hash(), "aaaa");
  EXPECT_EQ(h.votes(), 2u);
  EXPECT_EQ(h.eligible(), 3u);
  // Round 2 (step 2): b failed it; a and c applied it but disagree.
  ASSERT_NO_FATAL_FAILURE(step(1));
  ASSERT_TRUE(planner.RecordResult("b", 2, false, 1).ok());
  planner.JudgeHash("a", 2, "a2");
  planner.JudgeHash("c", 2, "c2");
  EXPECT_FALSE(planner.ConfirmedHash(2).confirmed()) << "1 of 2 is no majority";
  planner.JudgeHash("c", 2, "a2");  // c resynchronised and holds a's
  EXPECT_EQ(planner.ConfirmedHash(2).hash(), "a2");
  EXPECT_TRUE(planner.ConfirmedHash(2).confirmed());
  // Round 3 (step 3): every member failed it; the weights are step 2's.
  ASSERT_NO_FATAL_FAILURE(step(2));
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(planner.RecordResult(id, 3, false, 1).ok());
  h = planner.ConfirmedHash(3);
  EXPECT_TRUE(h.confirmed()) << h.why();
  EXPECT_EQ(h.hash(), "a2");
  // Round 4 (step 4): a and b apply it, c goes silent.
  ASSERT_NO_FATAL_FAILURE(step(3));
  ASSERT_TRUE(planner.RecordResult("a", 4, true, 1).ok());
  ASSERT_TRUE(planner.RecordResult("b", 4, true, 1).ok());
  planner.JudgeHash("a", 4, "a4");
  EXPECT_FALSE(planner.ConfirmedHash(4).confirmed()) << "1 of 3";
  planner.JudgeHash("b", 4, "a4");
  EXPECT_TRUE(planner.ConfirmedHash(4).confirmed()) << "2 of 3";
  planner.Forget("b", /*hashes=*/false);  // b left: what it reported stands
  EXPECT_TRUE(planner.ConfirmedHash(4).confirmed());
  // Past the deadline and the report TTL, silent c no longer counts.
  clock.Advance(o.round_timeout + o.report_ttl + absl::Seconds(1));
  h = planner.ConfirmedHash(4);
  EXPECT_EQ(h.eligible(), 2u);
  EXPECT_TRUE(h.confirmed());
  planner.Disown("b");  // b was evicted: its word no longer counts
  h = planner.ConfirmedHash(4);
  EXPECT_EQ(h.eligible(), 1u);
  EXPECT_EQ(h.votes(), 1u);
  // Round 5 (step 5): a is removed before it says how the round ended.
  ASSERT_NO_FATAL_FAILURE(step(4));
  planner.JudgeHash("c", 5, "c5");
  planner.Forget("a", /*hashes=*/false);
  h = planner.ConfirmedHash(5);
  EXPECT_EQ(h.eligible(), 1u) << "a failed it; b is disowned";
  EXPECT_TRUE(h.confirmed());
  EXPECT_EQ(h.hash(), "c5");
  // A step never taken, and step 0, are not confirmed.
  EXPECT_FALSE(planner.ConfirmedHash(9).confirmed());
  EXPECT_FALSE(planner.ConfirmedHash(0).confirmed());
}

// A restarted coordinator (at step 7, knowing a, b and c from its ledger)
// keeps no round that made step 7: the peers it knew confirm it instead.
TEST(RoundPlanner, ARestartedPlannersFirstStepIsConfirmedByThePeersItKnew) {
  FakeClock clock;
  RoundPlannerOptions o;
  o.target_batch_size = 4;
  o.initial_global_step = 7;
  o.members_at_start = {"a", "b", "c", "liar"};
  RoundPlanner planner(o, &clock);
  planner.Disown("liar");  // evicted since: its word does not count
  planner.JudgeHash("liar", 7, "bad7");
  planner.JudgeHash("a", 7, "a7");
  v1::GetStepHashResponse h = planner.ConfirmedHash(7);
  EXPECT_FALSE(h.confirmed()) << "1 of a, b, c";
  EXPECT_EQ(h.eligible(), 3u);
  // A peer that joined after the restart was not there: its vote is none.
  planner.JudgeHash("newcomer", 7, "a7");
  EXPECT_FALSE(planner.ConfirmedHash(7).confirmed());
  planner.JudgeHash("b", 7, "a7");
  h = planner.ConfirmedHash(7);
  EXPECT_TRUE(h.confirmed()) << h.why();
  EXPECT_EQ(h.hash(), "a7");
  EXPECT_EQ(h.votes(), 2u);
  // Steps before the restart stay unknown: their rounds are gone.
  EXPECT_FALSE(planner.ConfirmedHash(6).confirmed());
  EXPECT_FALSE(planner.ConfirmedHash(6).initial());

  // Another restart: only a says; c is downloading (it cannot say) and b
  // left. Until report_ttl has passed since the start c still counts.
  o.members_at_start = {"a", "b", "c"};
  RoundPlanner restarted(o, &clock);
  restarted.JudgeHash("a", 7, "a7");
  restarted.Forget("b", /*hashes=*/false);
  h = restarted.ConfirmedHash(7);
  EXPECT_FALSE(h.confirmed()) << "1 of a and c";
  EXPECT_EQ(h.eligible(), 2u);
  clock.Advance(o.report_ttl + absl::Seconds(1));
  h = restarted.ConfirmedHash(7);
  EXPECT_TRUE(h.confirmed()) << h.why();
  EXPECT_EQ(h.eligible(), 1u);
  // Round 8 (step 8) fails for every member: step 7's weights stand, and
  // the peers known at the start still confirm them.
  for (const char* id : {"a", "c"}) ASSERT_TRUE(restarted.Report(id, 7, 2, 1, 0, Info).ok());
  for (const char* id : {"a", "c"}) ASSERT_TRUE(restarted.RecordResult(id, 8, false, 1).ok());
  h = restarted.ConfirmedHash(8);
  EXPECT_TRUE(h.confirmed()) << h.why();
  EXPECT_EQ(h.hash(), "a7");
}

// The coordinator died just after handing round 3 (the round that makes
// step 3) to a, before b heard of it; c died too. Restarted at step 3, it
// keeps no round 3. a failed the round (it held the step-2 weights) and
// says so: it no longer stands in for round 3's members, so b's hash alone
// (c is gone) confirms step 3, and a can take b's state. (a could not vote
// for step 3 itself: it was waiting for that very confirmation.)
TEST(RoundPlanner, AMemberThatFailedTheRoundBeforeARestartDoesNotHoldItsStepBack) {
  FakeClock clock;
  RoundPlannerOptions o;
  o.target_batch_size = 12;
  o.initial_global_step = 3;
  o.members_at_start = {"a", "b", "c"};
  RoundPlanner planner(o, &clock);
  planner.JudgeHash("b", 3, "b3");
  planner.Forget("c", /*hashes=*/false);  // evicted: no heartbeat
  v1::GetStepHashResponse h = planner.ConfirmedHash(3);
  EXPECT_FALSE(h.confirmed()) << "1 of a and b";
  EXPECT_EQ(h.eligible(), 2u);
  ASSERT_TRUE(planner.RecordResult("a", 3, /*applied=*/false, 1).ok());
  h = planner.ConfirmedHash(3);
  EXPECT_TRUE(h.confirmed()) << h.why();
  EXPECT_EQ(h.hash(), "b3");
  EXPECT_EQ(h.eligible(), 1u);
  // Only a member known at the start, only for the round of the start step.
  EXPECT_TRUE(absl::IsNotFound(planner.RecordResult("newcomer", 3, false, 1)));
  EXPECT_TRUE(absl::IsNotFound(planner.RecordResult("b", 2, false, 1)));

  // Every member known at the start failed that round: nobody applied it,
  // and the weights they all hold are step 3's (they vote for them).
  RoundPlanner all_failed(o, &clock);
  for (const char* id : {"a", "b", "c"}) {
    ASSERT_TRUE(all_failed.RecordResult(id, 3, false, 1).ok());
  }
  all_failed.JudgeHash("a", 3, "w2");
  all_failed.JudgeHash("b", 3, "w2");
  h = all_failed.ConfirmedHash(3);
  EXPECT_TRUE(h.confirmed()) << h.why();
  EXPECT_EQ(h.eligible(), 3u);

  // a and b failed it; c, which did not say, died unheard: nobody left
  // applied it, and a's and b's hashes confirm it.
  RoundPlanner others_gone(o, &clock);
  for (const char* id : {"a", "b"}) {
    ASSERT_TRUE(others_gone.RecordResult(id, 3, false, 1).ok());
    others_gone.JudgeHash(id, 3, "w2");
  }
  EXPECT_FALSE(others_gone.ConfirmedHash(3).confirmed()) << "c may still say";
  others_gone.Forget("c", /*hashes=*/false);
  h = others_gone.ConfirmedHash(3);
  EXPECT_TRUE(h.confirmed()) << h.why();
  EXPECT_EQ(h.hash(), "w2");
  EXPECT_EQ(h.eligible(), 2u);
}

TEST(RoundPlanner, AStepNobodyAppliedSinceTheStartHasTheInitialWeights) {
  FakeClock clock;
  RoundPlannerOptions o;
  o.target_batch_size = 2;
  RoundPlanner planner(o, &clock);
  for (const char* id : {"a", "b"}) ASSERT_TRUE(planner.Report(id, 0, 1, 1, 0, Info).ok());
  for (const char* id : {"a", "b"}) ASSERT_TRUE(planner.RecordResult(id, 1, false, 1).ok());
  v1::GetStepHashResponse h = planner.ConfirmedHash(1);
  EXPECT_FALSE(h.confirmed());
  EXPECT_TRUE(h.initial()) << h.why();
}

}  // namespace
}  // namespace dd::coordinator
