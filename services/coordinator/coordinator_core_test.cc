// CoordinatorCore with an in-memory ledger, a fake clock and a scripted
// health prober: liveness, reachability, identity and bad input.
#include "services/coordinator/coordinator_core.h"

#include <cmath>
#include <map>
#include <set>

#include "common/rpc/auth.h"
#include "common/image/image_codec.h"
#include "gtest/gtest.h"

namespace dd::coordinator {
namespace {

// Answers probes from a table of address -> serving, synchronously.
class ScriptedProber : public HealthProber {
 public:
  void Probe(const std::string& address, std::function<void(bool)> done) override {
    bool serving;
    {
      absl::MutexLock lock(&mu_);
      serving = serving_[address];
      probes_[address]++;
    }
    done(serving);
  }
  void Set(const std::string& address, bool serving) {
    absl::MutexLock lock(&mu_);
    serving_[address] = serving;
  }
  int Probes(const std::string& address) {
    absl::MutexLock lock(&mu_);
    return probes_[address];
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, bool> serving_;
  std::map<std::string, int> probes_;
};

class CoordinatorCoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ledger = ChunkLedger::Open(NewInMemoryKvStore(), {"run", "m", {8, 8, 8, 8, 8, 8}},
                                    &clock_);
    ASSERT_TRUE(ledger.ok());
    ledger_ = std::move(*ledger);
    LivenessOptions lo;
    lo.ttl = absl::Seconds(30);
    liveness_ = std::make_unique<PeerLiveness>(ledger_.get(), &prober_, &clock_, lo);
    history_ = std::move(*RunHistory::Open(""));
    newest_sample_ = NewestSample::Open("");
    MakeCore(0);
  }

  // (Re)creates the planner and the core; `reducer_audits` as the run's.
  void MakeCore(uint32_t reducer_audits) {
    core_.reset();
    CoordinatorOptions options;
    options.lease_timeout = absl::Minutes(20);
    options.heartbeat_ttl = absl::Seconds(30);
    options.admin_token = "admin-secret-0123456789";
    RoundPlannerOptions ro;
    ro.target_batch_size = 16;
    ro.reducer_audits = reducer_audits;
    rounds_ = std::make_unique<RoundPlanner>(ro, &clock_);
    core_ = std::make_unique<CoordinatorCore>(
        ledger_.get(), liveness_.get(), rounds_.get(), RunConfig{"run", "{\"run_id\":\"run\"}"},
        options, &clock_, nullptr, RunRecords{history_.get(), newest_sample_.get()});
  }

  v1::PeerRef Join(const std::string& address, const std::string& id = "",
                   bool client_only = false) {
    v1::JoinRequest req;
    req.set_peer_id(id);
    req.set_listen_address(address);
    req.set_client_only(client_only);
    auto r = core_->Join(req);
    EXPECT_TRUE(r.ok()) << r.status();
    v1::PeerRef ref;
    ref.set_peer_id(r->peer_id());
    ref.set_incarnation(r->incarnation());
    return ref;
  }

  std::vector<v1::Lease> Acquire(const v1::PeerRef& p, uint32_t n) {
    v1::AcquireChunksRequest req;
    *req.mutable_peer() = p;
    req.set_max_chunks(n);
    auto r = core_->AcquireChunks(req);
    EXPECT_TRUE(r.ok()) << r.status();
    return {r->leases().begin(), r->leases().end()};
  }

  absl::Status Heartbeat(const v1::PeerRef& p) {
    v1::HeartbeatRequest req;
    *req.mutable_peer() = p;
    req.set_samples_per_second(12.5);
    return core_->Heartbeat(req).status();
  }

  std::map<std::string, v1::PeerEntry> Peers() {
    std::map<std::string, v1::PeerEntry> out;
    auto response = core_->ListPeers({});
    EXPECT_TRUE(response.ok());
    for (const auto& p : response->peers()) out[p.peer_id()] = p;
    return out;
  }

  FakeClock clock_;
  ScriptedProber prober_;
  std::unique_ptr<ChunkLedger> ledger_;
  std::unique_ptr<PeerLiveness> liveness_;
  std::unique_ptr<RoundPlanner> rounds_;
  std::unique_ptr<RunHistory> history_;
  std::unique_ptr<NewestSample> newest_sample_;
  std::unique_ptr<CoordinatorCore> core_;
};

TEST_F(CoordinatorCoreTest, JoinReturnsIdentityAndTheRunConfiguration) {
  v1::JoinRequest req;
  req.set_listen_address("10.1.1.1:7000");
  auto r = core_->Join(req);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->incarnation(), 1u);
  EXPECT_EQ(r->run_id(), "run");
  EXPECT_EQ(r->run_config_json(), "{\"run_id\":\"run\"}");
  EXPECT_EQ(r->heartbeat_ttl_ms(), 30000u);
  EXPECT_EQ(r->lease_timeout_ms(), 20u * 60 * 1000);
}

TEST_F(CoordinatorCoreTest, SilentPeerIsEvictedAndItsChunksGoToOthers) {
  v1::PeerRef quiet = Join("10.0.0.1:7000");
  v1::PeerRef busy = Join("10.0.0.2:7000");
  EXPECT_EQ(Acquire(quiet, 6).size(), 6u);
  EXPECT_TRUE(Acquire(busy, 1).empty());
  for (int i = 0; i < 4; ++i) {
    clock_.Advance(absl::Seconds(10));
    ASSERT_TRUE(Heartbeat(busy).ok());
    core_->Tick();
  }
  // 40 s without a heartbeat > 30 s TTL.
  EXPECT_EQ(Heartbeat(quiet).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Peers().count(quiet.peer_id()), 0u);
  EXPECT_EQ(Acquire(busy, 6).size(), 6u);
}

TEST_F(CoordinatorCoreTest, OnlyAddressesThatAnswerAHealthCheckAreListed) {
  prober_.Set("10.0.0.1:7000", true);
  prober_.Set("10.0.0.2:7000", false);
  v1::PeerRef alive = Join("10.0.0.1:7000");
  v1::PeerRef dead = Join("10.0.0.2:7000");
  v1::PeerRef client = Join("", "", /*client_only=*/true);
  auto peers = Peers();
  EXPECT_EQ(peers[alive.peer_id()].reachability(), v1::REACHABLE);
  EXPECT_EQ(peers[alive.peer_id()].address(), "10.0.0.1:7000");
  EXPECT_EQ(peers[dead.peer_id()].reachability(), v1::UNREACHABLE);
  EXPECT_EQ(peers[dead.peer_id()].address(), "");
  EXPECT_EQ(peers[client.peer_id()].reachability(), v1::CLIENT_ONLY);
  EXPECT_EQ(peers[client.peer_id()].address(), "");
  // The unreachable peer is retried and listed once it answers.
  prober_.Set("10.0.0.2:7000", true);
  clock_.Advance(absl::Seconds(2));
  core_->Tick();
  EXPECT_EQ(Peers()[dead.peer_id()].address(), "10.0.0.2:7000");
  EXPECT_GE(prober_.Probes("10.0.0.2:7000"), 2);
  // A reachable peer that stops answering is withdrawn at its next probe.
  prober_.Set("10.0.0.1:7000", false);
  clock_.Advance(absl::Seconds(31));
  ASSERT_TRUE(Heartbeat(alive).ok());
  ASSERT_TRUE(Heartbeat(dead).ok());
  ASSERT_TRUE(Heartbeat(client).ok());
  core_->Tick();
  EXPECT_EQ(Peers()[alive.peer_id()].address(), "");
}

TEST_F(CoordinatorCoreTest, PublicAddressIsWhatGetsProbedAndListed) {
  prober_.Set("203.0.113.5:443", true);
  v1::JoinRequest req;
  req.set_listen_address("0.0.0.0:7000");
  req.set_public_address("203.0.113.5:443");
  auto r = core_->Join(req);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(Peers()[r->peer_id()].address(), "203.0.113.5:443");
}

TEST_F(CoordinatorCoreTest, RestartWithTheSamePeerIdReplacesTheOldEntry) {
  prober_.Set("10.0.0.1:7000", true);
  v1::PeerRef first = Join("10.0.0.1:7000");
  Acquire(first, 3);
  v1::PeerRef second = Join("10.0.0.1:7000", first.peer_id());
  EXPECT_EQ(second.incarnation(), 2u);
  auto peers = Peers();
  EXPECT_EQ(peers.size(), 1u);
  EXPECT_EQ(peers[first.peer_id()].incarnation(), 2u);
  EXPECT_EQ(peers[first.peer_id()].leased_chunks(), 0u);
  EXPECT_EQ(Heartbeat(first).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Heartbeat(second).ok());
}

TEST_F(CoordinatorCoreTest, BadInputIsRefusedAndLeavesTheLedgerUnchanged) {
  v1::PeerRef p = Join("10.0.0.1:7000");
  auto leases = Acquire(p, 2);
  auto before = *core_->GetRunState({});

  auto acquire = [&](const v1::PeerRef& who, uint32_t n) {
    v1::AcquireChunksRequest req;
    *req.mutable_peer() = who;
    req.set_max_chunks(n);
    return core_->AcquireChunks(req).status().code();
  };
  EXPECT_EQ(acquire(p, 0), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(acquire(p, 1025), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(acquire(p, 0xffffffffu), absl::StatusCode::kInvalidArgument);
  v1::PeerRef unknown;
  unknown.set_peer_id("peer-77-ffffff");
  unknown.set_incarnation(1);
  EXPECT_EQ(acquire(unknown, 1), absl::StatusCode::kNotFound);
  v1::PeerRef stale = p;
  stale.set_incarnation(0);
  EXPECT_EQ(acquire(stale, 1), absl::StatusCode::kFailedPrecondition);

  v1::CompleteChunkRequest complete;
  *complete.mutable_peer() = p;
  complete.set_chunk_id(leases[0].chunk_id());
  complete.set_lease_id(leases[0].lease_id());
  complete.set_samples_trained(9);  // chunk has 8
  EXPECT_EQ(core_->CompleteChunk(complete).status().code(), absl::StatusCode::kInvalidArgument);
  complete.set_chunk_id(1ull << 60);
  EXPECT_EQ(core_->CompleteChunk(complete).status().code(), absl::StatusCode::kInvalidArgument);

  v1::HeartbeatRequest hb;
  *hb.mutable_peer() = p;
  hb.set_samples_per_second(-1);
  EXPECT_EQ(core_->Heartbeat(hb).status().code(), absl::StatusCode::kInvalidArgument);
  hb.set_samples_per_second(std::nan(""));
  EXPECT_EQ(core_->Heartbeat(hb).status().code(), absl::StatusCode::kInvalidArgument);

  for (const char* bad : {"", "nohost", ":80", "host:0", "host:65536", "host:http",
                          "a b:80", "::1:80", "host:-1"}) {
    v1::JoinRequest req;
    req.set_listen_address(bad);
    EXPECT_EQ(core_->Join(req).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  v1::JoinRequest client_with_address;
  client_with_address.set_client_only(true);
  client_with_address.set_public_address("1.2.3.4:5");
  EXPECT_EQ(core_->Join(client_with_address).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::JoinRequest forged;
  forged.set_peer_id("peer-999-abcdef");
  forged.set_listen_address("10.0.0.3:7000");
  EXPECT_EQ(core_->Join(forged).status().code(), absl::StatusCode::kFailedPrecondition);

  v1::ListChunksRequest list;
  list.set_page_size(10001);
  EXPECT_EQ(core_->ListChunks(list).status().code(), absl::StatusCode::kInvalidArgument);
  list.set_page_size(0);
  list.set_page_token("x");
  EXPECT_EQ(core_->ListChunks(list).status().code(), absl::StatusCode::kInvalidArgument);

  auto after = *core_->GetRunState({});
  EXPECT_EQ(after.chunks_leased(), before.chunks_leased());
  EXPECT_EQ(after.completions(), before.completions());
  EXPECT_EQ(after.samples_done(), before.samples_done());
  EXPECT_EQ(Peers().size(), 1u);
}

TEST_F(CoordinatorCoreTest, AdminCallsNeedTheAdminToken) {
  v1::PeerRef p = Join("10.0.0.1:7000");
  auto leases = Acquire(p, 1);
  v1::AdminReleaseChunkRequest release;
  release.set_chunk_id(leases[0].chunk_id());
  EXPECT_EQ(core_->AdminReleaseChunk(release, "").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(core_->AdminReleaseChunk(release, "wrong").status().code(),
            absl::StatusCode::kPermissionDenied);
  auto r = core_->AdminReleaseChunk(release, "admin-secret-0123456789");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->was_leased());
  v1::AdminEvictPeerRequest evict;
  evict.set_peer_id(p.peer_id());
  EXPECT_EQ(core_->AdminEvictPeer(evict, "nope").status().code(),
            absl::StatusCode::kPermissionDenied);
  ASSERT_TRUE(core_->AdminEvictPeer(evict, "admin-secret-0123456789").ok());
  EXPECT_EQ(Heartbeat(p).code(), absl::StatusCode::kNotFound);
}

TEST_F(CoordinatorCoreTest, RunStateCountsChunksAndThroughput) {
  v1::PeerRef p = Join("10.0.0.1:7000");
  auto leases = Acquire(p, 2);
  v1::CompleteChunkRequest c;
  *c.mutable_peer() = p;
  c.set_chunk_id(leases[0].chunk_id());
  c.set_lease_id(leases[0].lease_id());
  c.set_samples_trained(7);
  ASSERT_TRUE(core_->CompleteChunk(c).ok());
  ASSERT_TRUE(Heartbeat(p).ok());
  auto s = *core_->GetRunState({});
  EXPECT_EQ(s.epoch(), 0u);
  EXPECT_EQ(s.chunks_pending(), 4u);
  EXPECT_EQ(s.chunks_leased(), 1u);
  EXPECT_EQ(s.chunks_done(), 1u);
  EXPECT_EQ(s.samples_done(), 7u);
  EXPECT_EQ(s.live_peers(), 1u);
  EXPECT_DOUBLE_EQ(s.samples_per_second(), 12.5);
  v1::LeaveRequest leave;
  *leave.mutable_peer() = p;
  EXPECT_EQ(core_->Leave(leave)->released_chunks(), 1u);
  EXPECT_EQ(core_->GetRunState({})->live_peers(), 0u);
}

TEST_F(CoordinatorCoreTest, TelemetryBuildsTheHistoryOfStepsTaken) {
  prober_.Set("10.0.0.1:7000", true);
  v1::PeerRef a = Join("10.0.0.1:7000");
  auto report = [&](uint64_t samples, uint64_t telemetry_step, double loss) {
    v1::ReportProgressRequest req;
    *req.mutable_peer() = a;
    req.set_global_step(telemetry_step);  // the step it trains toward next
    req.set_samples_accumulated(samples);
    if (telemetry_step > 0) {
      req.mutable_telemetry()->set_step(telemetry_step);
      req.mutable_telemetry()->set_loss(loss);
      req.mutable_telemetry()->set_samples_per_second(8);
    }
    return core_->ReportProgress(req);
  };
  // No step has been taken: telemetry for step 1 is refused.
  EXPECT_EQ(report(4, 1, 0.5).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(report(16, 0, 0).ok());  // opens the round of global step 1
  EXPECT_EQ(report(0, 1, std::nan("")).status().code(), absl::StatusCode::kInvalidArgument);
  auto ok = report(0, 1, 0.5);
  ASSERT_TRUE(ok.ok()) << ok.status();
  auto history = core_->GetHistory({});
  ASSERT_TRUE(history.ok());
  ASSERT_EQ(history->points_size(), 1);
  EXPECT_EQ(history->points(0).step(), 1u);
  EXPECT_EQ(history->points(0).loss(), 0.5);
  EXPECT_EQ(history->points(0).samples_per_second(), 8);
  v1::GetHistoryRequest too_many;
  too_many.set_max_points(100001);
  EXPECT_EQ(core_->GetHistory(too_many).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(CoordinatorCoreTest, MembersReportHowTheirRoundsEnded) {
  prober_.Set("10.0.0.1:7000", true);
  prober_.Set("10.0.0.2:7000", true);
  v1::PeerRef a = Join("10.0.0.1:7000");
  v1::PeerRef b = Join("10.0.0.2:7000");
  v1::PeerRef outsider = Join("10.0.0.3:7000");
  auto report = [&](const v1::PeerRef& p, uint64_t step, uint64_t samples, bool applied,
                    bool finished) {
    v1::ReportProgressRequest req;
    *req.mutable_peer() = p;
    req.set_global_step(step);
    req.set_samples_accumulated(samples);
    req.set_finished(finished);
    if (step > 0) {
      req.set_after_round_id(1);
      v1::RoundResult* r = req.add_round_results();
      r->set_round_id(1);
      r->set_applied(applied);
      r->set_averaging_seconds(0.75);
    }
    return core_->ReportProgress(req);
  };
  ASSERT_TRUE(report(a, 0, 8, true, false).ok());
  ASSERT_TRUE(report(b, 0, 8, true, false).ok());  // round 1 opens
  EXPECT_EQ(report(outsider, 1, 0, true, false).status().code(),
            absl::StatusCode::kPermissionDenied);  // not a member of round 1
  ASSERT_TRUE(report(a, 1, 0, true, false).ok());
  // b stops: a finished report records its result and joins no round (a's
  // report toward step 1 stays alone).
  auto last = report(b, 1, 0, true, true);
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(last->global_step(), 1u);
  EXPECT_FALSE(last->has_round());
  auto rounds = core_->ListRounds({});
  ASSERT_EQ(rounds->rounds_size(), 1);
  EXPECT_EQ(rounds->rounds(0).outcome(), v1::ROUND_APPLIED);
  EXPECT_EQ(rounds->rounds(0).duration_seconds(), 0.75);
  v1::ReportProgressRequest too_many;
  *too_many.mutable_peer() = a;
  too_many.set_global_step(1);
  for (int i = 0; i < 17; ++i) too_many.add_round_results()->set_round_id(1);
  EXPECT_EQ(core_->ReportProgress(too_many).status().code(), absl::StatusCode::kInvalidArgument);
}

// A reducer is banned once two different auditors found it dishonest; one
// auditor alone (who may be the liar) bans nobody.
TEST_F(CoordinatorCoreTest, AReducerFoundDishonestByTwoAuditorsIsBanned) {
  MakeCore(/*reducer_audits=*/1);
  std::vector<v1::PeerRef> peers;
  for (int i = 1; i <= 4; ++i) {
    const std::string address = absl::StrCat("10.0.0.", i, ":7000");
    prober_.Set(address, true);
    peers.push_back(Join(address));
  }
  const std::string cheat = peers[0].peer_id();
  std::set<std::string> accusers;
  for (uint64_t step = 0; step < 40 && accusers.size() < 2; ++step) {
    for (const v1::PeerRef& p : peers) {
      v1::ReportProgressRequest req;
      *req.mutable_peer() = p;
      req.set_global_step(step);
      req.set_samples_accumulated(4);
      ASSERT_TRUE(core_->ReportProgress(req).ok()) << step;
    }
    v1::GetRoundRequest get;
    *get.mutable_peer() = peers[1];
    get.set_after_round_id(step);
    auto round = core_->GetRound(get);
    ASSERT_TRUE(round.ok() && round->found());
    const v1::Round& r = round->round();
    ASSERT_TRUE(r.audited());
    // Every auditor reports (the cheat first: members are in id order); the
    // one auditing the cheat's span finds a mismatch.
    for (int i = 0; i < r.members_size(); ++i) {
      v1::ReportAuditsRequest verdicts;
      verdicts.set_round_id(r.round_id());
      *verdicts.mutable_peer() = peers[0];
      for (const v1::PeerRef& p : peers) {
        if (p.peer_id() == r.members(i).peer_id()) *verdicts.mutable_peer() = p;
      }
      // The full plan, as the listing shows it once settled, is not out
      // yet: ask the planner as a member that sees the span.
      v1::GetRoundRequest mine;
      *mine.mutable_peer() = verdicts.peer();
      mine.set_after_round_id(step);
      auto seen = core_->GetRound(mine);
      if (!seen.ok()) {  // the cheat, banned by this round's second accusation
        EXPECT_EQ(verdicts.peer().peer_id(), cheat) << seen.status();
        continue;
      }
      for (const v1::RoundAudit& a : seen->round().audits()) {
        if (a.auditor() != static_cast<uint32_t>(i)) continue;
        v1::AuditReport* rep = verdicts.add_reports();
        rep->set_span(a.span());
        const bool caught = r.members(a.span()).peer_id() == cheat;
        rep->set_verdict(caught ? v1::AUDIT_MISMATCH : v1::AUDIT_PASSED);
        if (caught) accusers.insert(r.members(i).peer_id());
      }
      auto status = core_->ReportAudits(verdicts);
      ASSERT_TRUE(status.ok()) << status.status();
    }
    // Everyone sees the round failed.
    v1::ReportAuditsRequest ask;
    *ask.mutable_peer() = peers[2];
    ask.set_round_id(r.round_id());
    auto settled = core_->ReportAudits(ask);
    ASSERT_TRUE(settled.ok());
    EXPECT_EQ(settled->audits_pending(), 0u);
    EXPECT_TRUE(settled->audit_failed());
    const bool banned = absl::IsNotFound(Heartbeat(peers[0]));
    EXPECT_EQ(banned, accusers.size() >= 2) << accusers.size() << " accusers at step " << step;
  }
  ASSERT_EQ(accusers.size(), 2u);
  // Banned: it cannot rejoin under its id.
  v1::JoinRequest again;
  again.set_peer_id(cheat);
  again.set_listen_address("10.0.0.1:7000");
  EXPECT_EQ(core_->Join(again).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(core_->reducers_banned(), 1u);
  EXPECT_GE(core_->audit_verdicts(v1::AUDIT_MISMATCH), 2u);
  for (size_t i = 1; i < peers.size(); ++i) EXPECT_TRUE(Heartbeat(peers[i]).ok());
}

TEST_F(CoordinatorCoreTest, SampleGridsAreCheckedAndRateLimited) {
  prober_.Set("10.0.0.1:7000", true);
  v1::PeerRef a = Join("10.0.0.1:7000");
  RgbImage image{4, 2, std::vector<uint8_t>(4 * 2 * 3, 200)};
  auto upload = [&](uint64_t step, std::string png) {
    v1::UploadSampleRequest req;
    *req.mutable_peer() = a;
    req.set_step(step);
    req.set_png(std::move(png));
    return core_->UploadSample(req);
  };
  // Step 0 (the base model's grid) exists; step 1 not yet.
  EXPECT_EQ(upload(1, *EncodePng(image)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(upload(0, "GIF89a").status().code(), absl::StatusCode::kInvalidArgument);
  clock_.Advance(kSampleUploadInterval);
  auto kept = upload(0, *EncodePng(image));
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_TRUE(kept->kept());
  EXPECT_EQ(upload(0, *EncodePng(image)).status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_NE(newest_sample_->Get(), nullptr);
  EXPECT_EQ(newest_sample_->Get()->peer_id, a.peer_id());
  EXPECT_EQ(newest_sample_->Get()->width, 4);
  v1::PeerRef stranger;
  stranger.set_peer_id("nobody");
  v1::UploadSampleRequest req;
  *req.mutable_peer() = stranger;
  EXPECT_EQ(core_->UploadSample(req).status().code(), absl::StatusCode::kNotFound);
}

// One peer that floods the coordinator runs out of calls; others do not.
TEST_F(CoordinatorCoreTest, APeerCallingTooOftenIsSlowedDownAlone) {
  CoordinatorOptions options;
  options.peer_call_burst = 3;
  options.peer_call_interval = absl::Seconds(1);
  CoordinatorCore core(ledger_.get(), liveness_.get(), rounds_.get(), RunConfig{"run", "{}"}, options,
                       &clock_);
  prober_.Set("10.0.0.1:7000", true);
  prober_.Set("10.0.0.2:7000", true);
  v1::PeerRef a = Join("10.0.0.1:7000"), b = Join("10.0.0.2:7000");
  auto get_round = [&](const v1::PeerRef& p) {
    return core.GetRound({}, Caller::Peer(p.peer_id(), p.incarnation())).status().code();
  };
  for (int i = 0; i < 3; ++i) EXPECT_EQ(get_round(a), absl::StatusCode::kOk) << i;
  EXPECT_EQ(get_round(a), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(get_round(b), absl::StatusCode::kOk);
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(get_round(a), absl::StatusCode::kOk);
  EXPECT_EQ(get_round(a), absl::StatusCode::kResourceExhausted);
}

TEST_F(CoordinatorCoreTest, OutvotedHashesAreCountedForTheMetrics) {
  std::vector<v1::PeerRef> peers;
  for (const char* address : {"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"}) {
    prober_.Set(address, true);
    peers.push_back(Join(address));
  }
  auto report = [&](const v1::PeerRef& p, uint64_t step, uint64_t samples,
                    const std::string& hash) {
    v1::ReportProgressRequest req;
    *req.mutable_peer() = p;
    req.set_global_step(step);
    req.set_samples_accumulated(samples);
    if (!hash.empty()) {
      req.set_hash_step(step);
      req.set_params_hash(hash);
    }
    return core_->ReportProgress(req);
  };
  for (const auto& p : peers) ASSERT_TRUE(report(p, 0, 6, "").ok());  // opens step 1
  EXPECT_FALSE(report(peers[0], 1, 0, "aaaa")->diverged());
  EXPECT_FALSE(report(peers[1], 1, 0, "aaaa")->diverged());
  EXPECT_EQ(core_->diverged_reports(), 0u);
  auto outvoted = report(peers[2], 1, 0, "cccc");
  ASSERT_TRUE(outvoted.ok()) << outvoted.status();
  EXPECT_TRUE(outvoted->diverged());
  EXPECT_EQ(core_->diverged_reports(), 1u);
}

TEST_F(CoordinatorCoreTest, ProgressReportsOpenRoundsWithReachableReducers) {
  prober_.Set("10.0.0.1:7000", true);
  prober_.Set("10.0.0.2:7000", true);
  v1::PeerRef a = Join("10.0.0.1:7000");
  v1::PeerRef b = Join("10.0.0.2:7000");
  v1::PeerRef c = Join("", "", /*client_only=*/true);
  auto report = [&](const v1::PeerRef& p, uint64_t step, uint64_t samples) {
    v1::ReportProgressRequest req;
    *req.mutable_peer() = p;
    req.set_global_step(step);
    req.set_samples_accumulated(samples);
    req.set_samples_per_second(3);
    return core_->ReportProgress(req);
  };
  ASSERT_TRUE(report(a, 0, 6).ok());
  ASSERT_TRUE(report(c, 0, 4).ok());
  v1::GetRoundRequest get;
  *get.mutable_peer() = a;
  EXPECT_FALSE(core_->GetRound(get)->found());
  auto last = report(b, 0, 6);  // 16 >= target 16
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(last->global_step(), 1u);
  auto round = core_->GetRound(get);
  ASSERT_TRUE(round.ok() && round->found());
  EXPECT_EQ(round->round().members_size(), 3);
  for (const auto& m : round->round().members()) {
    bool is_client = m.peer_id() == c.peer_id();
    EXPECT_EQ(m.span_share(), is_client ? 0.0 : 1.0);
    EXPECT_EQ(m.address().empty(), is_client);
  }
  EXPECT_EQ(core_->GetRunState({})->global_step(), 1u);
  EXPECT_EQ(report(a, 0, 1).status().code(), absl::StatusCode::kFailedPrecondition);
  // Each peer is listed with the step of its last report (what a peer that
  // finished looks at before it stops serving its state).
  v1::ReportProgressRequest done;
  *done.mutable_peer() = b;
  done.set_global_step(1);
  done.set_finished(true);
  ASSERT_TRUE(core_->ReportProgress(done).ok());
  EXPECT_EQ(Peers()[a.peer_id()].global_step(), 0u);
  EXPECT_EQ(Peers()[b.peer_id()].global_step(), 1u);
  v1::PeerRef stranger;
  stranger.set_peer_id("peer-9-000000");
  EXPECT_EQ(report(stranger, 1, 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(core_->ListRounds({})->rounds_size(), 1);
}

// A report answers with the newest round after `after_round_id` that
// includes the reporter: the one it opened, or one opened by another's
// report, so peers learn of rounds without polling GetRound.
TEST_F(CoordinatorCoreTest, AReportAnswersWithTheReportersNewRound) {
  prober_.Set("10.0.0.1:7000", true);
  prober_.Set("10.0.0.2:7000", true);
  v1::PeerRef a = Join("10.0.0.1:7000");
  v1::PeerRef b = Join("10.0.0.2:7000");
  auto report = [&](const v1::PeerRef& p, uint64_t step, uint64_t samples, uint64_t after) {
    v1::ReportProgressRequest req;
    *req.mutable_peer() = p;
    req.set_global_step(step);
    req.set_samples_accumulated(samples);
    req.set_after_round_id(after);
    return core_->ReportProgress(req);
  };
  auto first = report(a, 0, 8, 0);
  ASSERT_TRUE(first.ok());
  EXPECT_FALSE(first->has_round());  // 8 < target 16: nothing opened yet
  auto opening = report(b, 0, 8, 0);
  ASSERT_TRUE(opening.ok());
  ASSERT_TRUE(opening->has_round());
  EXPECT_EQ(opening->round().global_step(), 0u);
  EXPECT_EQ(opening->round().members_size(), 2);
  const uint64_t id = opening->round().round_id();
  // a learns of it with its next report (for the next step).
  auto next = report(a, 1, 4, 0);
  ASSERT_TRUE(next.ok());
  ASSERT_TRUE(next->has_round());
  EXPECT_EQ(next->round().round_id(), id);
  // Once a has seen it, it is not handed out again.
  auto seen = report(a, 1, 4, id);
  ASSERT_TRUE(seen.ok());
  EXPECT_FALSE(seen->has_round());
}

// Membership changes reach every view at once: a peer evicted for silence
// (found by liveness) no longer counts toward a round with the report it
// sent before it went quiet, and is no member of the next round.
TEST_F(CoordinatorCoreTest, APeerEvictedForSilenceLosesItsReportToo) {
  prober_.Set("10.0.0.1:7000", true);
  prober_.Set("10.0.0.2:7000", true);
  v1::PeerRef a = Join("10.0.0.1:7000");
  v1::PeerRef b = Join("10.0.0.2:7000");
  auto report = [&](const v1::PeerRef& p, uint64_t samples) {
    v1::ReportProgressRequest req;
    *req.mutable_peer() = p;
    req.set_global_step(0);
    req.set_samples_accumulated(samples);
    return core_->ReportProgress(req);
  };
  ASSERT_TRUE(report(a, 8).ok());
  clock_.Advance(absl::Seconds(31));  // a falls silent; b heartbeats
  ASSERT_TRUE(Heartbeat(b).ok());
  core_->Tick();
  EXPECT_EQ(Peers().count(a.peer_id()), 0u);
  auto half = report(b, 8);  // with a's stale report this would reach 16
  ASSERT_TRUE(half.ok());
  EXPECT_FALSE(half->has_round());
  EXPECT_EQ(half->global_step(), 0u);
  auto full = report(b, 16);
  ASSERT_TRUE(full.ok());
  ASSERT_TRUE(full->has_round());
  ASSERT_EQ(full->round().members_size(), 1);
  EXPECT_EQ(full->round().members(0).peer_id(), b.peer_id());
}

}  // namespace
TEST_F(CoordinatorCoreTest, AJoinFloodFromOneAddressIsRefused) {
  Caller from = Caller::RunToken();
  from.remote_ip = "198.18.0.5";
  v1::JoinRequest req;
  req.set_client_only(true);
  CoordinatorOptions defaults;
  for (int i = 0; i < defaults.join_burst; ++i) ASSERT_TRUE(core_->Join(req, from).ok()) << i;
  EXPECT_EQ(core_->Join(req, from).status().code(), absl::StatusCode::kResourceExhausted);
  // Other addresses and loopback are not held back by it.
  Caller other = from;
  other.remote_ip = "198.18.0.6";
  EXPECT_TRUE(core_->Join(req, other).ok());
  Caller local = from;
  local.remote_ip = "127.0.0.1";
  EXPECT_TRUE(core_->Join(req, local).ok());
  // The bucket refills at one join per interval.
  clock_.Advance(defaults.join_interval);
  EXPECT_TRUE(core_->Join(req, from).ok());
  EXPECT_EQ(core_->Join(req, from).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(CoordinatorCoreTest, DepartedPeersAreForgottenAfterADay) {
  v1::PeerRef gone = Join("127.0.0.1:9");
  v1::LeaveRequest leave;
  *leave.mutable_peer() = gone;
  ASSERT_TRUE(core_->Leave(leave).ok());
  clock_.Advance(CoordinatorOptions().forget_peers_after + absl::Minutes(2));
  core_->Tick();
  v1::JoinRequest rejoin;
  rejoin.set_peer_id(gone.peer_id());
  rejoin.set_listen_address("127.0.0.1:9");
  EXPECT_EQ(core_->Join(rejoin).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(CheckAddressIsCallers, APeerRegistersOnlyAnAddressItCallsFrom) {
  EXPECT_TRUE(CheckAddressIsCallers("198.18.0.5:7000", "198.18.0.5").ok());
  EXPECT_TRUE(CheckAddressIsCallers("[2001:db8::5]:7000", "2001:db8::5").ok());
  EXPECT_TRUE(CheckAddressIsCallers("127.0.0.1:7000", "::1").ok());  // both loopback
  EXPECT_TRUE(CheckAddressIsCallers("trainer-0.trainers:7000", "198.18.0.5").ok());  // a name
  EXPECT_TRUE(CheckAddressIsCallers("198.18.0.9:7000", "").ok());  // caller unknown
  // Making the coordinator probe someone else's service:
  EXPECT_EQ(CheckAddressIsCallers("198.18.0.9:22", "198.18.0.5").code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(CheckAddressIsCallers("127.0.0.1:6379", "198.18.0.5").code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(CheckAddressIsCallers("[2001:db8::9]:80", "2001:db8::5").code(),
            absl::StatusCode::kPermissionDenied);
}

}  // namespace dd::coordinator
