// PeerSession with N peers as threads in one process, over in-memory fakes
// (trainer/collab/testing): every transition without processes or sockets,
// checked against closed forms.
#include "trainer/collab/peer_session.h"

#include <cmath>
#include <cstring>
#include <thread>

#include "gtest/gtest.h"
#include "trainer/collab/outer_optimizer.h"
#include "trainer/collab/synchronizer.h"
#include "trainer/collab/testing/fake_peer_links.h"

namespace dd::collab {
namespace {

using testing::FakeBatches;
using testing::FakeCollaboration;
using testing::FakeModel;
using testing::Target;

constexpr size_t kN = 64;   // weights of the fake model
constexpr double kLr = 0.1;  // its SGD learning rate

// Options of a test session: fast polls, short patience.
SessionOptions Options(int64_t max_steps, int64_t cap = 0) {
  SessionOptions so;
  so.max_steps = max_steps;
  so.max_local_samples_per_step = cap;
  so.poll_interval = absl::Milliseconds(1);
  so.report_interval = absl::ZeroDuration();  // every local step: exact step counts
  // Long enough for the members' hashes to confirm a downloaded state on a
  // loaded machine.
  so.resync_patience = absl::Seconds(2);
  // A peer that ends early (a test's fault) holds the others' end this long
  // at most.
  so.linger = absl::Seconds(2);
  return so;
}

SyncConfig Outer(int64_t h, bool overlap) {
  SyncConfig sync;
  sync.mode = SyncMode::kOuter;
  sync.outer.local_steps = h;
  sync.outer.max_local_steps = h;  // exact step counts for the closed forms
  sync.outer.overlap = overlap;
  return sync;
}

struct Peer {
  Peer(const std::string& name, int batch, absl::Duration delay = absl::ZeroDuration())
      : id(name), model(kN, kLr), batches(name, batch, delay) {}
  std::string id;
  FakeModel model;
  FakeBatches batches;
  std::unique_ptr<Synchronizer> sync;
  std::unique_ptr<PeerSession> session;
  absl::Status result;
};

std::unique_ptr<Peer> MakePeer(FakeCollaboration& c, const std::string& name, int batch,
                               const SessionOptions& so, const SyncConfig& sync,
                               absl::Duration batch_time = absl::ZeroDuration()) {
  auto p = std::make_unique<Peer>(name, batch, batch_time);
  if (sync.mode == SyncMode::kOuter) {
    auto s = MakeOuterSync(&p->model, sync.outer, 1);
    EXPECT_TRUE(s.ok()) << s.status();
    p->sync = std::move(*s);
  } else {
    p->sync = MakeGradientSync(&p->model);
  }
  p->session = std::make_unique<PeerSession>(so, p->sync.get(), c.Coordinator(name), &p->batches,
                                             &p->model, c.Averager(name), c.States(name));
  return p;
}

// Peers "a" and "b" with the same options.
std::vector<std::unique_ptr<Peer>> TwoPeers(FakeCollaboration& c, int batch,
                                            const SessionOptions& so, const SyncConfig& sync,
                                            absl::Duration batch_time = absl::ZeroDuration()) {
  std::vector<std::unique_ptr<Peer>> peers;
  peers.reserve(3);  // room for a late joiner: threads hold references to the elements
  peers.push_back(MakePeer(c, "a", batch, so, sync, batch_time));
  peers.push_back(MakePeer(c, "b", batch, so, sync, batch_time));
  return peers;
}

void RunAll(std::vector<std::unique_ptr<Peer>>& peers) {
  std::vector<std::thread> threads;
  for (auto& p : peers) threads.emplace_back([&p] { p->result = p->session->Run(); });
  for (auto& t : threads) t.join();
  for (auto& p : peers) ASSERT_TRUE(p->result.ok()) << p->id << ": " << p->result;
}

// The mean over `keys` of the per-sample gradient w − c(key).
std::vector<double> MeanGradient(const std::vector<float>& w, const std::vector<std::string>& keys) {
  std::vector<double> g(w.size(), 0.0);
  for (const auto& k : keys) {
    for (size_t i = 0; i < w.size(); ++i) g[i] += w[i] - Target(k, i);
  }
  for (double& x : g) x /= keys.size();
  return g;
}

std::vector<std::string> Keys(const std::string& peer, int from, int count) {
  std::vector<std::string> out;
  for (int i = from; i < from + count; ++i) out.push_back(peer + "-" + std::to_string(i));
  return out;
}

TEST(PeerSessionTest, GradientModeTwoPeersStepTogetherAsOneTrainerAtTheirCombinedBatch) {
  FakeCollaboration c(/*target_batch_size=*/8);
  SessionOptions so = Options(3, /*cap=*/4);
  so.write_samples = true;
  so.outputs.image_log_steps = 2;
  std::vector<std::unique_ptr<Peer>> peers = TwoPeers(c, 4, so, SyncConfig{});
  ASSERT_NO_FATAL_FAILURE(RunAll(peers));
  EXPECT_EQ(peers[0]->session->stats().hashes, peers[1]->session->stats().hashes);
  // Every member reported each round applied (the last one with its final
  // report), so the coordinator resolved all three.
  std::vector<cv1::Round> rounds = c.planner().Recent();
  ASSERT_EQ(rounds.size(), 3u);
  for (const auto& r : rounds) {
    EXPECT_EQ(r.outcome(), cv1::ROUND_APPLIED) << r.round_id();
    for (const auto& m : r.members()) EXPECT_EQ(m.outcome(), cv1::ROUND_APPLIED) << m.peer_id();
  }
  // The designated writer (the rounds' first member) uploaded its grids.
  EXPECT_EQ(c.uploads(), (std::vector<std::string>{"a 2 fake-samples", "a 3 fake-samples"}));
  ASSERT_EQ(peers[0]->session->stats().hashes.size(), 3u);
  // One trainer, batch 8 = a's 4 + b's 4 per step, plain SGD.
  std::vector<float> w(kN, 0.0f);
  for (int step = 0; step < 3; ++step) {
    std::vector<std::string> keys = Keys("a", 4 * step, 4);
    for (auto& k : Keys("b", 4 * step, 4)) keys.push_back(k);
    std::vector<double> g = MeanGradient(w, keys);
    for (size_t i = 0; i < kN; ++i) w[i] -= static_cast<float>(kLr) * static_cast<float>(g[i]);
  }
  for (size_t i = 0; i < kN; ++i) EXPECT_NEAR(peers[0]->model.weights()[i], w[i], 1e-5) << i;
  EXPECT_EQ(peers[0]->model.step(), 3);
  EXPECT_EQ(peers[0]->session->state(), PeerState::kDone);
}

TEST(PeerSessionTest, ANonFiniteContributionTakesPartWithWeightZero) {
  FakeCollaboration c(8);
  SessionOptions so = Options(2, /*cap=*/4);
  SessionOptions poisoned = so;
  poisoned.nan_contribution_at_step_for_test = 1;
  std::vector<std::unique_ptr<Peer>> peers;
  peers.push_back(MakePeer(c, "a", 4, so, SyncConfig{}));
  peers.push_back(MakePeer(c, "b", 4, poisoned, SyncConfig{}));
  ASSERT_NO_FATAL_FAILURE(RunAll(peers));
  EXPECT_EQ(peers[1]->session->stats().nonfinite, 1);
  EXPECT_EQ(peers[0]->session->stats().hashes, peers[1]->session->stats().hashes);
  // Step 1 applied a's gradient alone.
  std::vector<double> g = MeanGradient(std::vector<float>(kN, 0.0f), Keys("a", 0, 4));
  std::vector<float> w(kN);
  for (size_t i = 0; i < kN; ++i) w[i] = -static_cast<float>(kLr) * static_cast<float>(g[i]);
  std::vector<std::string> both = Keys("a", 4, 4);
  for (auto& k : Keys("b", 4, 4)) both.push_back(k);
  g = MeanGradient(w, both);
  for (size_t i = 0; i < kN; ++i) w[i] -= static_cast<float>(kLr) * static_cast<float>(g[i]);
  for (size_t i = 0; i < kN; ++i) EXPECT_NEAR(peers[1]->model.weights()[i], w[i], 1e-5) << i;
}

// DiLoCo without overlap, in closed form: each peer takes H SGD steps from
// θ on its own samples; θ moves by the outer Nesterov step on the
// sample-weighted mean of Δ = θ − θ_local.
TEST(PeerSessionTest, OuterStepsMatchDiLoCoAndEveryMemberHoldsTheSameWeights) {
  const int h = 3, steps = 4;
  FakeCollaboration c(/*target=*/2 * h * 2);
  SessionOptions so = Options(steps);
  SyncConfig sync = Outer(h, false);
  std::vector<std::unique_ptr<Peer>> peers = TwoPeers(c, 2, so, sync);
  ASSERT_NO_FATAL_FAILURE(RunAll(peers));
  ASSERT_EQ(peers[0]->session->stats().hashes.size(), static_cast<size_t>(steps));
  EXPECT_EQ(peers[0]->session->stats().hashes, peers[1]->session->stats().hashes);
  EXPECT_EQ(peers[0]->model.step(), steps * h);  // local optimizer steps

  OuterOptimizer outer(std::vector<float>(kN, 0.0f), sync.outer);
  int next_key = 0;
  for (int k = 0; k < steps; ++k) {
    std::vector<std::vector<float>> deltas;
    for (const char* peer : {"a", "b"}) {
      std::vector<float> w = outer.global();
      for (int s = 0; s < h; ++s) {
        std::vector<double> g = MeanGradient(w, Keys(peer, next_key + 2 * s, 2));
        for (size_t i = 0; i < kN; ++i) w[i] -= static_cast<float>(kLr) * static_cast<float>(g[i]);
      }
      std::vector<float> d(kN);
      outer.PseudoGradient(w.data(), d.data());
      deltas.push_back(d);
    }
    next_key += 2 * h;
    std::vector<float> mean(kN);
    for (size_t i = 0; i < kN; ++i) mean[i] = float((6.0 * deltas[0][i] + 6.0 * deltas[1][i]) / 12.0);
    ASSERT_TRUE(outer.Step(mean.data()).ok());
  }
  for (size_t i = 0; i < kN; ++i) EXPECT_NEAR(peers[0]->model.weights()[i], outer.global()[i], 1e-5);
  EXPECT_EQ(peers[0]->session->stats().hashes.rbegin()->second,
            HashOfValues(peers[0]->model.weights()));
  // One metrics row per local step, each with the outer step and timings.
  ASSERT_EQ(peers[0]->model.metrics.size(), static_cast<size_t>(steps * h));
  for (const char* key : {"outer_step", "bytes_sent", "bytes_received", "compute_seconds",
                          "waiting_seconds", "step_seconds"}) {
    EXPECT_EQ(peers[0]->model.metrics.back().count(key), 1u) << key;
  }
  double sent = 0;
  for (const auto& row : peers[0]->model.metrics) sent += row.at("bytes_sent");
  EXPECT_LE(sent, peers[0]->session->stats().bytes_sent);
  EXPECT_EQ(sent, peers[0]->session->stats().bytes_sent);  // the rows add up to the traffic
}

TEST(PeerSessionTest, WithOverlapLocalStepsRunDuringTheRoundAndTheGlobalWeightsAgree) {
  const int h = 2, steps = 3;
  FakeCollaboration c(2 * h * 2, averaging::CodecId::kUniform8Bit);
  c.SetRoundDelay(absl::Milliseconds(300));
  SessionOptions so = Options(steps);
  SyncConfig sync = Outer(h, true);
  std::vector<std::unique_ptr<Peer>> peers = TwoPeers(c, 2, so, sync);
  ASSERT_NO_FATAL_FAILURE(RunAll(peers));
  ASSERT_EQ(peers[0]->session->stats().hashes.size(), static_cast<size_t>(steps));
  EXPECT_EQ(peers[0]->session->stats().hashes, peers[1]->session->stats().hashes);
  EXPECT_EQ(peers[0]->model.step(), steps * h);
  // The local steps of outer step 1 ran while round 0 was in flight (300
  // ms; a local step takes microseconds): 2H rows were recorded before the
  // first outer step was applied, where without overlap there are H.
  int before_first = 0;
  for (const auto& row : peers[0]->model.metrics) before_first += row.at("outer_step") == 0;
  EXPECT_EQ(before_first, 2 * h);
  // After the last round no local step follows: the local weights are θ.
  EXPECT_EQ(HashOfValues(peers[0]->model.weights()), peers[0]->session->stats().hashes.rbegin()->second);
}

// Peers of different speeds: the fast one goes on past H while the slow one
// is still short of it, the outer step closes when the two together have
// gathered the target, and nobody idles, is dropped as stale or
// resynchronises; the global weights agree.
TEST(PeerSessionTest, AFastPeerFillsInForASlowOneUpToMaxLocalSteps) {
  const int h = 4, steps = 3;
  FakeCollaboration c(/*target=*/2 * h * 2);
  SessionOptions so = Options(steps);
  SyncConfig sync = Outer(h, true);
  sync.outer.max_local_steps = 3 * h;
  std::vector<std::unique_ptr<Peer>> peers;
  peers.push_back(MakePeer(c, "fast", 2, so, sync, absl::Milliseconds(5)));
  peers.push_back(MakePeer(c, "slow", 2, so, sync, absl::Milliseconds(25)));
  ASSERT_NO_FATAL_FAILURE(RunAll(peers));
  EXPECT_EQ(peers[0]->session->stats().hashes, peers[1]->session->stats().hashes);
  ASSERT_EQ(peers[0]->session->stats().hashes.size(), static_cast<size_t>(steps));
  for (const auto& p : peers) {
    EXPECT_EQ(p->session->stats().stale_dropped, 0) << p->id;
    EXPECT_EQ(p->session->stats().resyncs, 0) << p->id;
  }
  // Five times faster: well over H local steps per outer step for the fast
  // peer, under H for the slow one, and never past max_local_steps.
  std::map<double, int> fast_rows, slow_rows;  // local steps by outer step
  for (const auto& row : peers[0]->model.metrics) ++fast_rows[row.at("outer_step")];
  for (const auto& row : peers[1]->model.metrics) ++slow_rows[row.at("outer_step")];
  EXPECT_GT(peers[0]->model.step(), steps * h);
  EXPECT_LT(peers[1]->model.step(), steps * h);
  for (const auto& [outer, n] : fast_rows) EXPECT_LE(n, 3 * h) << "outer step " << outer;
}

// A member whose weights change behind the collaboration's back (a bit flip)
// reports a hash the two others outvote; the coordinator says so, the peer
// downloads a member's state, and all end with the same weights.
TEST(PeerSessionTest, APeerWhoseWeightsDivergedIsOutvotedAndResynchronises) {
  FakeCollaboration c(/*target_batch_size=*/12);
  SessionOptions so = Options(6, /*cap=*/4);
  std::vector<std::unique_ptr<Peer>> peers;
  for (const char* name : {"a", "b", "c"}) peers.push_back(MakePeer(c, name, 4, so, SyncConfig{}));
  peers[2]->model.CorruptAfterStepForTest(2);
  ASSERT_NO_FATAL_FAILURE(RunAll(peers));
  EXPECT_GE(peers[2]->session->stats().diverged, 1);
  EXPECT_GE(peers[2]->session->stats().resyncs, 1);
  EXPECT_EQ(peers[0]->session->stats().diverged, 0);
  EXPECT_EQ(peers[1]->session->stats().diverged, 0);
  EXPECT_EQ(peers[0]->model.weights(), peers[1]->model.weights());
  EXPECT_EQ(peers[2]->model.weights(), peers[0]->model.weights());
  EXPECT_EQ(peers[2]->session->stats().hashes.rbegin()->second,
            peers[0]->session->stats().hashes.rbegin()->second);
}

// The coordinator makes c a member of a round before c hears that it
// diverged (the other members' hashes came late). c then takes part in that
// round with nothing, so a and b need not wait out the round's deadline for
// its span, and resynchronises after it.
TEST(PeerSessionTest, APeerFoundDivergedInsideARoundTakesPartWithNothingThenResynchronises) {
  FakeCollaboration c(/*target_batch_size=*/12);
  SessionOptions so = Options(6, /*cap=*/4);
  std::vector<std::unique_ptr<Peer>> peers;
  for (const char* name : {"a", "b"}) peers.push_back(MakePeer(c, name, 4, so, SyncConfig{}));
  // c, the slowest, is the last to report toward each step: its report opens
  // the round, and the answer hands it over.
  peers.push_back(MakePeer(c, "c", 4, so, SyncConfig{}, absl::Milliseconds(100)));
  peers[2]->model.CorruptAfterStepForTest(2);
  c.DelayDivergedVerdictUntilARound("c");
  const absl::Time start = absl::Now();
  ASSERT_NO_FATAL_FAILURE(RunAll(peers));
  EXPECT_LT(absl::Now() - start, absl::Seconds(25)) << "a round waited out its deadline";
  EXPECT_GE(peers[2]->session->stats().diverged, 1);
  EXPECT_GE(peers[2]->session->stats().rounds_withheld, 1);
  EXPECT_GE(peers[2]->session->stats().resyncs, 1);
  for (auto& p : peers) EXPECT_EQ(p->session->stats().rounds_failed, 0) << p->id;
  EXPECT_EQ(peers[0]->model.weights(), peers[1]->model.weights());
  EXPECT_EQ(peers[2]->model.weights(), peers[0]->model.weights());
}

TEST(PeerSessionTest, ErrorFeedbackCarriesWhatTheCodecDropped) {
  const int h = 2;
  FakeCollaboration c(2 * h * 2, averaging::CodecId::kUniform8Bit);
  SessionOptions so = Options(3);
  SyncConfig sync = Outer(h, false);
  std::vector<std::unique_ptr<Peer>> with = TwoPeers(c, 2, so, sync);
  ASSERT_NO_FATAL_FAILURE(RunAll(with));
  EXPECT_EQ(with[0]->session->stats().hashes, with[1]->session->stats().hashes);
  FakeCollaboration c2(2 * h * 2, averaging::CodecId::kUniform8Bit);
  sync.outer.error_feedback = false;
  std::vector<std::unique_ptr<Peer>> without = TwoPeers(c2, 2, so, sync);
  ASSERT_NO_FATAL_FAILURE(RunAll(without));
  // Same data, same codec: error feedback changes what is applied.
  EXPECT_NE(with[0]->session->stats().hashes.rbegin()->second,
            without[0]->session->stats().hashes.rbegin()->second);
}

TEST(PeerSessionTest, AFailedRoundResynchronisesFromAPeerThatAppliedIt) {
  FakeCollaboration c(8);
  c.FailRound(2);  // fails on every member: nobody applies step 2
  SessionOptions so = Options(3, /*cap=*/4);
  std::vector<std::unique_ptr<Peer>> peers = TwoPeers(c, 4, so, SyncConfig{});
  ASSERT_NO_FATAL_FAILURE(RunAll(peers));
  for (auto& p : peers) {
    EXPECT_EQ(p->session->stats().rounds_failed, 1) << p->id;
    EXPECT_EQ(p->session->stats().resyncs, 1) << p->id;
    EXPECT_EQ(p->session->applied_steps(), 3u);
  }
  // Nobody was ahead, so both kept their (identical) weights and went on.
  EXPECT_EQ(peers[0]->model.ParameterHash(), peers[1]->model.ParameterHash());
  // The members reported the failure; the coordinator counts the round
  // failed and the others applied.
  for (const auto& r : c.planner().Recent()) {
    EXPECT_EQ(r.outcome(), r.round_id() == 2 ? cv1::ROUND_FAILED : cv1::ROUND_APPLIED)
        << r.round_id();
  }
}

TEST(PeerSessionTest, AnAbandonedRoundIsAppliedByNobodyAndNobodyDownloadsIt) {
  FakeCollaboration c(8);
  c.AbandonRound(2);  // an audit found its reduction dishonest
  SessionOptions so = Options(3, /*cap=*/4);
  std::vector<std::unique_ptr<Peer>> peers = TwoPeers(c, 4, so, SyncConfig{});
  ASSERT_NO_FATAL_FAILURE(RunAll(peers));
  for (auto& p : peers) {
    EXPECT_EQ(p->session->stats().rounds_failed, 1) << p->id;
    EXPECT_EQ(p->session->stats().states_refused, 0) << p->id;
    EXPECT_EQ(p->session->applied_steps(), 3u);
    // Nobody applied step 2: the weights after it are step 1's, and the
    // hash reported for it says so.
    const auto& hashes = p->session->stats().hashes;
    ASSERT_TRUE(hashes.count(1) && hashes.count(2)) << p->id;
    EXPECT_EQ(hashes.at(2), hashes.at(1)) << "step 2 was applied by " << p->id;
  }
  EXPECT_EQ(c.fetches(), 0) << "nobody looked for a state of the abandoned step";
  EXPECT_EQ(peers[0]->model.ParameterHash(), peers[1]->model.ParameterHash());
}

// a and b finish the run; c, known to the collaboration but not yet
// started, joins only then. a and b serve their final state while c is
// behind, so c ends with their weights; with linger 0 nobody serves it and
// c ends on weights of its own.
TEST(PeerSessionTest, PeersThatFinishedServeTheFinalStateWhileAnotherIsBehind) {
  for (absl::Duration linger : {absl::Seconds(30), absl::ZeroDuration()}) {
    SCOPED_TRACE(absl::StrCat("linger ", absl::FormatDuration(linger)));
    FakeCollaboration c(8);
    SessionOptions so = Options(3, /*cap=*/4);
    so.linger = linger;
    std::vector<std::unique_ptr<Peer>> peers = TwoPeers(c, 4, so, SyncConfig{});
    peers.push_back(MakePeer(c, "c", 4, so, SyncConfig{}));
    std::vector<std::thread> threads;
    for (int i : {0, 1}) threads.emplace_back([&p = peers[i]] { p->result = p->session->Run(); });
    // Until a and b have both said they are done.
    while (c.PeersBehind("c", 3) > 0) absl::SleepFor(absl::Milliseconds(1));
    Peer& late = *peers[2];
    late.result = late.session->Run();
    for (auto& t : threads) t.join();
    for (auto& p : peers) ASSERT_TRUE(p->result.ok()) << p->id << ": " << p->result;
    EXPECT_EQ(peers[0]->model.weights(), peers[1]->model.weights());
    if (linger > absl::ZeroDuration()) {
      EXPECT_EQ(late.session->stats().resyncs, 1);
      EXPECT_EQ(late.model.weights(), peers[0]->model.weights());
      EXPECT_EQ(late.session->stats().hashes.at(3), peers[0]->session->stats().hashes.at(3));
    } else {
      EXPECT_NE(late.model.weights(), peers[0]->model.weights());
    }
  }
}

// A peer the coordinator no longer knows (evicted while its link or machine
// stalled) stops with a clear error instead of training on unheard.
TEST(PeerSessionTest, AnEvictedPeerStopsAndSaysToRestart) {
  FakeCollaboration c(8);
  SessionOptions so = Options(50, /*cap=*/4);
  std::vector<std::unique_ptr<Peer>> peers = TwoPeers(c, 4, so, SyncConfig{});
  c.Evict("b");
  absl::Status b = peers[1]->session->Run();
  EXPECT_EQ(b.code(), absl::StatusCode::kUnavailable) << b;
  EXPECT_NE(b.message().find("restart it to join again"), std::string::npos) << b;
  EXPECT_TRUE(peers[1]->session->stats().hashes.empty());
}

// A report refused because another process took the peer's id is not a
// stale step: the session stops instead of resynchronising as a ghost.
TEST(PeerSessionTest, ASupersededProcessStops) {
  FakeCollaboration c(8);
  SessionOptions so = Options(50, /*cap=*/4);
  std::vector<std::unique_ptr<Peer>> peers = TwoPeers(c, 4, so, SyncConfig{});
  c.Supersede("b");
  absl::Status b = peers[1]->session->Run();
  EXPECT_EQ(b.code(), absl::StatusCode::kAborted) << b;
  EXPECT_NE(b.message().find("another process joined as this peer"), std::string::npos) << b;
  EXPECT_EQ(peers[1]->session->stats().resyncs, 0);
}

TEST(PeerSessionTest, ALateJoinerDownloadsTheOuterStateAndAgrees) {
  const int h = 2;
  FakeCollaboration c(2 * h * 2);  // two peers' contributions close a step
  c.SetRoundDelay(absl::Milliseconds(40));
  SessionOptions so = Options(8);
  SyncConfig sync = Outer(h, false);
  // Batches take a while, so a state downloaded (and confirmed by the
  // members' hashes) is not outdated before the joiner can report.
  std::vector<std::unique_ptr<Peer>> peers = TwoPeers(c, 2, so, sync, absl::Milliseconds(10));
  std::vector<std::thread> threads;
  for (auto& p : peers) threads.emplace_back([&p] { p->result = p->session->Run(); });
  while (c.planner().global_step() < 2) absl::SleepFor(absl::Milliseconds(1));
  peers.push_back(MakePeer(c, "c", 2, so, sync));
  Peer& late = *peers.back();
  ASSERT_TRUE(late.session->Advance().ok());  // joining: the collaboration is ahead
  EXPECT_EQ(late.session->state(), PeerState::kResynchronising);
  late.result = late.session->Run();
  for (auto& t : threads) t.join();
  for (auto& p : peers) ASSERT_TRUE(p->result.ok()) << p->id << ": " << p->result;
  EXPECT_GE(late.session->stats().resyncs, 1);
  // Whoever applied a step holds the same weights after it; together the
  // peers applied every step; all end with the same θ.
  std::map<uint64_t, std::string> all;
  for (auto& p : peers) {
    for (const auto& [step, hash] : p->session->stats().hashes) {
      auto [it, inserted] = all.insert({step, hash});
      EXPECT_EQ(it->second, hash) << p->id << " step " << step;
    }
  }
  EXPECT_EQ(all.size(), 8u);
  // (Whether it also contributes to a round is a race here: the other two
  // close a step within microseconds of the state it downloaded.)
  EXPECT_EQ(late.sync->Hash(), peers[0]->sync->Hash());
  EXPECT_EQ(late.sync->Hash(), peers[1]->sync->Hash());
}

// One fast peer reaches the target alone (a step every ~60 ms); a slower
// one (150 ms a batch) joins late. Downloaded the state, the joiner takes
// part in the next step at once, as a peer does after a round: had it
// waited for its first batch to report, the fast peer would have taken that
// step without it every time, and it would drop its work and download
// again round after round, never training a step (CI's late joiner, and
// SurvivorFinishesWhenAPeerIsKilled's victim, did).
TEST(PeerSessionTest, ASlowLateJoinerTakesPartInTheStepAfterItsDownload) {
  FakeCollaboration c(8);
  c.SetRoundDelay(absl::Milliseconds(5));
  SessionOptions so = Options(30, /*cap=*/8);
  std::vector<std::unique_ptr<Peer>> peers;
  peers.reserve(2);
  peers.push_back(MakePeer(c, "a", 4, so, SyncConfig{}, absl::Milliseconds(30)));
  std::thread fast([&] { peers[0]->result = peers[0]->session->Run(); });
  while (c.planner().global_step() < 2) absl::SleepFor(absl::Milliseconds(1));
  peers.push_back(MakePeer(c, "b", 4, so, SyncConfig{}, absl::Milliseconds(150)));
  Peer& late = *peers.back();
  late.result = late.session->Run();
  fast.join();
  for (auto& p : peers) ASSERT_TRUE(p->result.ok()) << p->id << ": " << p->result;
  EXPECT_EQ(late.session->stats().resyncs, 1) << "only the late join's";
  EXPECT_EQ(late.session->stats().stale_dropped, 0);
  EXPECT_EQ(late.model.ParameterHash(), peers[0]->model.ParameterHash());
}

// A late joiner's first donor serves a state whose weights are not the
// collaboration's (finite and well-formed: only its hash tells). The joiner
// refuses it, since the round's members confirm another hash, and takes the
// next donor's; it does not ask the liar again. (It stops at step 4 of the
// others' 20, holding a state it took while they still train, not one it
// could take only at the end of the run.)
TEST(PeerSessionTest, ALateJoinerRefusesALyingDonorsStateAndTakesAnHonestOne) {
  FakeCollaboration c(16);
  c.SetRoundDelay(absl::Milliseconds(20));
  c.AlterStatesServedBy("a");  // the first donor asked
  SessionOptions so = Options(20, /*cap=*/8);
  so.resync_patience = absl::Seconds(5);
  std::vector<std::unique_ptr<Peer>> peers =
      TwoPeers(c, 4, so, SyncConfig{}, absl::Milliseconds(20));
  std::vector<std::thread> threads;
  for (auto& p : peers) threads.emplace_back([&p] { p->result = p->session->Run(); });
  while (c.planner().global_step() < 2) absl::SleepFor(absl::Milliseconds(1));
  SessionOptions joiner = so;
  joiner.max_steps = 4;
  peers.push_back(MakePeer(c, "c", 4, joiner, SyncConfig{}, absl::Milliseconds(20)));
  Peer& late = *peers.back();
  late.result = late.session->Run();
  for (auto& t : threads) t.join();
  for (auto& p : peers) ASSERT_TRUE(p->result.ok()) << p->id << ": " << p->result;
  // Once per resynchronisation would be more: a proven liar is not asked again.
  EXPECT_EQ(late.session->stats().states_refused, 1);
  EXPECT_GE(late.session->stats().resyncs, 1);
  // It holds the weights the others held after the same step.
  const uint64_t step = late.session->applied_steps();
  ASSERT_GE(step, 4u);
  ASSERT_EQ(peers[1]->session->stats().hashes.count(step), 1u) << step;
  EXPECT_EQ(late.model.ParameterHash(), peers[1]->session->stats().hashes.at(step));
}

}  // namespace
}  // namespace dd::collab
