// Collaborative training as users run it: real processes, real files.
//
// make_shapes_dataset writes a captioned dataset; dataset_server serves it;
// the coordinator runs a collaboration with target batch 8; two trainer
// peers (batch 4 each, the fixture's tiny SD model, token auth) join, lease
// chunks, average their gradients with the butterfly and step together.
// Checked: both reach the last step with the same parameter hash after
// every global step, exactly one (designated) peer writes checkpoints, the
// coordinator's ledger counts the trained samples. Then a peer is SIGKILLed
// mid-run and the survivor still finishes its steps; the dataset service is
// restarted under the peers; and two peers end with the weights of one
// trainer at their combined batch.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/rpc/channel.h"
#include "gtest/gtest.h"
#include "tests/testing/collab_fixture.h"
#include "tests/testing/subprocess.h"
#include "trainer/collab/coordinator_client.h"
#include "trainer/data/data_loader.h"
#include "trainer/data/sample_source.h"
#include "trainer/model/lora.h"
#include "trainer/model/torch_tensors.h"
#include "trainer/model/unet.h"
#include "trainer/training/trainer.h"

namespace dd {
namespace {

using testing::RunfilePath;
using testing::Subprocess;

using testing::kAdminToken;
using testing::kToken;
using testing::AgreedStepHashes;
using testing::StepHashes;

class CollabTrainingTest : public testing::CollabFixture {};

TEST_F(CollabTrainingTest, TwoPeersStepTogetherWithIdenticalParameters) {
  ASSERT_NO_FATAL_FAILURE(
      StartCoordinator(R"({"run_id": "it", "target_batch_size": 8, "max_steps": 4, "codec": "none"})"));
  Subprocess a = StartPeer("a", {"--max_local_samples_per_step=4"});
  Subprocess b = StartPeer("b", {"--max_local_samples_per_step=4"});
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(a, "a", absl::Minutes(4)));
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(b, "b", absl::Minutes(4)));
  auto ha = StepHashes(testing::ReadLog(dir_ + "/a.log")), hb = StepHashes(testing::ReadLog(dir_ + "/b.log"));
  ASSERT_EQ(ha.size(), 4u) << testing::ReadLog(dir_ + "/a.log");
  EXPECT_EQ(ha, hb);  // the same parameters after every global step
  // Exactly one designated writer made checkpoints.
  bool a_wrote = std::filesystem::exists(dir_ + "/a/checkpoint-4/unet/config.json");
  bool b_wrote = std::filesystem::exists(dir_ + "/b/checkpoint-4/unet/config.json");
  EXPECT_NE(a_wrote, b_wrote);
  // The ledger saw the trained samples and 4 rounds.
  auto state = RunState();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->global_step(), 4u);
  EXPECT_GT(state->samples_done(), 0u);
  EXPECT_EQ(state->chunks_leased(), 0u);  // leases released or completed on exit
}

// A LoRA run: the run configuration says rank 4, so both peers train (and
// average) only the adapters; they hold the same weights after every step,
// each sends per step the fp16 bytes of the other member's half of the
// adapters (and receives the means of that half in the replies), and the
// designated writer's checkpoint holds the adapters beside the linked base.
TEST_F(CollabTrainingTest, ALoraRunAveragesOnlyTheAdapters) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(
      R"({"run_id": "lora", "target_batch_size": 8, "max_steps": 3, "codec": "fp16", "lora_rank": 4})"));
  Subprocess a = StartPeer("a", {"--max_local_samples_per_step=4"});
  Subprocess b = StartPeer("b", {"--max_local_samples_per_step=4"});
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(a, "a", absl::Minutes(4)));
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(b, "b", absl::Minutes(4)));
  const std::string log_a = testing::ReadLog(dir_ + "/a.log");
  auto ha = StepHashes(log_a), hb = StepHashes(testing::ReadLog(dir_ + "/b.log"));
  ASSERT_EQ(ha.size(), 3u) << log_a;
  EXPECT_EQ(ha, hb);
  // The adapters of the fixture's UNet at rank 4 (what every peer trains).
  auto unet = model::UNet::Load(std::string(std::getenv("FIXTURES_DIR")) + "/tiny-sd1/model/unet");
  ASSERT_TRUE(unet.ok());
  model::LoraOptions lo;
  lo.rank = 4;
  auto adapters = model::AttachLora((*unet)->lora_slots(), lo);
  ASSERT_TRUE(adapters.ok());
  int64_t values = 0, full = 0;
  for (const auto& p : *adapters) values += p.value.numel();
  for (const auto& p : (*unet)->parameters()) full += p.value.numel();
  EXPECT_NE(log_a.find(absl::StrCat(values, " trained values")), std::string::npos) << log_a;
  std::regex traffic("global step [0-9]+:.* sent ([0-9]+) B, received ([0-9]+) B");
  std::stringstream ss(log_a);
  int steps = 0;
  const int64_t half_fp16 = values / 2 * 2;  // the other member's half, 2 bytes a value
  for (std::string l; std::getline(ss, l);) {
    std::smatch m;
    if (!std::regex_search(l, m, traffic)) continue;
    for (int i : {1, 2}) {
      const int64_t bytes = std::stoll(m[i]);
      EXPECT_GE(bytes, half_fp16) << l;
      EXPECT_LE(bytes, half_fp16 + half_fp16 / 10 + 4096) << l;
      EXPECT_LT(bytes, full / 20) << l;  // far below the full UNet's half
    }
    ++steps;
  }
  EXPECT_EQ(steps, 3);
  const std::string writer = std::filesystem::exists(dir_ + "/a/checkpoint-2") ? "a" : "b";
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/" + writer + "/checkpoint-2/" + model::kLoraFile));
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/" + writer + "/checkpoint-2/" + model::kKohyaLoraFile));
}

// SDXL in a collaboration: two peers fine-tune tiny-sdxl (two text
// encoders, micro-conditioning) together and hold the same weights after
// every step. The peers are given no --model_dir: they start from the model
// the run configuration names.
TEST_F(CollabTrainingTest, SdxlPeersStepTogether) {
  auto init = Subprocess::Start({RunfilePath("trainer/tools/init_model"), "--size=tiny-sdxl",
                                 "--out=" + dir_ + "/sdxl", "--seed=4"},
                                dir_ + "/init.log");
  ASSERT_TRUE(init.ok());
  ASSERT_EQ(*init->Wait(absl::Seconds(120)), 0) << testing::ReadLog(dir_ + "/init.log");
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(absl::StrCat(
      R"({"run_id": "sdxl", "target_batch_size": 8, "max_steps": 3, "codec": "fp16", "model": ")", dir_,
      R"(/sdxl"})")));
  Subprocess a = StartPeer("a", {"--max_local_samples_per_step=4", "--model_dir="});
  Subprocess b = StartPeer("b", {"--max_local_samples_per_step=4", "--model_dir="});
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(a, "a", absl::Minutes(4)));
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(b, "b", absl::Minutes(4)));
  auto ha = StepHashes(testing::ReadLog(dir_ + "/a.log"));
  ASSERT_EQ(ha.size(), 3u) << testing::ReadLog(dir_ + "/a.log");
  EXPECT_EQ(ha, StepHashes(testing::ReadLog(dir_ + "/b.log")));
}

// An open run: one peer is a volunteer holding only an invitation (no run
// token), reading the dataset with its peer credential; the run averages
// with CenteredClip; both end with the same weights after every step.
TEST_F(CollabTrainingTest, AnOpenRunVolunteerJoinsWithAnInvitationAndStepsWithTheOthers) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(
      R"({"run_id": "it", "target_batch_size": 8, "max_steps": 3, "codec": "none", "open_run": true})"));
  SecurityConfig security;
  security.auth_token = kToken;
  auto stub = collab::cv1::Coordinator::NewStub(*MakeChannel(coordinator_address_, security));
  collab::cv1::AdminInviteRequest invite;
  invite.set_name("volunteer-b");
  collab::cv1::AdminInviteResponse invitation;
  grpc::ClientContext ctx;
  ctx.AddMetadata("x-dd-admin-token", kAdminToken);
  grpc::Status s = stub->AdminInvite(&ctx, invite, &invitation);
  ASSERT_TRUE(s.ok()) << s.error_message();
  std::ofstream(dir_ + "/invitation") << invitation.invitation() << "\n";

  Subprocess a = StartPeer("a", {"--max_local_samples_per_step=4"});
  Subprocess b = StartPeer("b", {"--max_local_samples_per_step=4",
                                 "--auth_token_file=" + dir_ + "/invitation"});
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(a, "a", absl::Minutes(4)));
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(b, "b", absl::Minutes(4)));
  auto ha = StepHashes(testing::ReadLog(dir_ + "/a.log")), hb = StepHashes(testing::ReadLog(dir_ + "/b.log"));
  ASSERT_EQ(ha.size(), 3u) << testing::ReadLog(dir_ + "/b.log");
  EXPECT_EQ(ha, hb);
  EXPECT_NE(testing::ReadLog(dir_ + "/b.log").find("CenteredClip"), std::string::npos);
  EXPECT_NE(testing::ReadLog(dir_ + "/dataset.log").find("peer credentials accepted"), std::string::npos);
}

TEST_F(CollabTrainingTest, APeerWithNanGradientsIsExcludedAndTheRunGoesOn) {
  ASSERT_NO_FATAL_FAILURE(
      StartCoordinator(R"({"run_id": "nan", "target_batch_size": 8, "max_steps": 3, "codec": "none"})"));
  Subprocess a = StartPeer("a", {"--max_local_samples_per_step=4"});
  Subprocess b = StartPeer("b", {"--max_local_samples_per_step=4", "--nan_contribution_at_step_for_test=2"});
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(a, "a", absl::Minutes(4)));
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(b, "b", absl::Minutes(4)));
  std::string blog = testing::ReadLog(dir_ + "/b.log");
  EXPECT_NE(blog.find("global step 2: local values were not finite; contributed with weight 0"),
            std::string::npos) << blog;
  auto ha = StepHashes(testing::ReadLog(dir_ + "/a.log")), hb = StepHashes(blog);
  ASSERT_EQ(ha.size(), 3u);
  EXPECT_EQ(ha, hb);  // both applied a's gradient at step 2, and stay identical
}

TEST_F(CollabTrainingTest, LateJoinerDownloadsTheStateAndAgreesWithTheOthers) {
  ASSERT_NO_FATAL_FAILURE(
      StartCoordinator(R"({"run_id": "late", "target_batch_size": 8, "max_steps": 8, "codec": "none"})"));
  Subprocess a = StartPeer("a", {"--max_local_samples_per_step=4"});
  Subprocess b = StartPeer("b", {"--max_local_samples_per_step=4"});
  ASSERT_NO_FATAL_FAILURE(WaitForSteps("a", 2));
  Subprocess c = StartPeer("c", {"--max_local_samples_per_step=4"});
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExits({{&a, "a"}, {&b, "b"}, {&c, "c"}}, absl::Minutes(5)));
  std::string clog = testing::ReadLog(dir_ + "/c.log");
  EXPECT_NE(clog.find("resynchronised (late join): downloaded the state of global step"),
            std::string::npos) << clog;
  // Every step any two peers both logged has one hash: the late joiner's
  // (and any peer that missed a round and resynchronised) included.
  std::map<int, std::string> agreed = AgreedStepHashes(
      {{"a", testing::ReadLog(dir_ + "/a.log")}, {"b", testing::ReadLog(dir_ + "/b.log")}, {"c", clog}});
  EXPECT_EQ(agreed.rbegin()->first, 8);
  // The downloaded state is the collaboration's: its hash is the one the
  // others logged after that step. (Whether c then wins a place in a round
  // depends on timing: with target 8 and three peers of 4, each round takes
  // the first two reports, and a peer left out resynchronises again.)
  std::regex synced("downloaded the state of global step ([0-9]+) .* params ([0-9a-f]+)");
  int checked = 0;
  std::stringstream lines(clog);
  for (std::string l; std::getline(lines, l);) {
    std::smatch m;
    if (!std::regex_search(l, m, synced)) continue;
    auto it = agreed.find(std::stoi(m[1]));
    if (it == agreed.end()) continue;
    EXPECT_EQ(it->second, m[2].str()) << l;
    ++checked;
  }
  EXPECT_GE(checked, 1) << clog;
  std::stringstream log(clog);
  for (std::string l; std::getline(log, l);) {
    if (l.find("global step") != std::string::npos || l.find("resynchronised") != std::string::npos ||
        l.find("stale") != std::string::npos) {
      std::cout << "c: " << l.substr(l.find(']') + 2).substr(0, 200) << "\n";
    }
  }
}

// Outer steps (DiLoCo) with real processes: each peer takes H = 4 local
// AdamW steps, the peers average the change of the weights (8-bit
// blockwise, error feedback) while the next local steps already run, and
// both hold the same global weights after every outer step.
TEST_F(CollabTrainingTest, OuterStepsTwoPeersHoldTheSameWeightsAfterEveryOuterStep) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(
      R"({"run_id": "outer", "sync": "outer", "local_steps": 4, "max_local_steps": 4, "target_batch_size": 32,
          "max_steps": 3, "codec": "blockwise8bit"})"));
  Subprocess a = StartPeer("a", {});
  Subprocess b = StartPeer("b", {});
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(a, "a", absl::Minutes(4)));
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(b, "b", absl::Minutes(4)));
  const std::string la = testing::ReadLog(dir_ + "/a.log"), lb = testing::ReadLog(dir_ + "/b.log");
  EXPECT_NE(la.find("sync: outer, codec blockwise8bit, H = 4 local steps (up to 4"), std::string::npos) << la;
  auto ha = StepHashes(la), hb = StepHashes(lb);
  ASSERT_EQ(ha.size(), 3u) << la;
  EXPECT_EQ(ha, hb);
  // The final line names the shared weights: equal too.
  std::regex final_line("final parameters ([0-9a-f]+)");
  std::smatch ma, mb;
  ASSERT_TRUE(std::regex_search(la, ma, final_line)) << la;
  ASSERT_TRUE(std::regex_search(lb, mb, final_line)) << lb;
  EXPECT_EQ(ma[1].str(), mb[1].str());
  EXPECT_EQ(ma[1].str().substr(0, 16), ha.rbegin()->second);
  // metrics.jsonl: one row per local step (4 per outer step) with the
  // outer step, the bytes moved and the time split.
  std::stringstream rows(testing::ReadLog(dir_ + "/a/metrics.jsonl"));
  int local_steps = 0;
  double bytes_sent = 0;
  for (std::string row; std::getline(rows, row);) {
    ++local_steps;
    for (const char* key : {"\"outer_step\"", "\"bytes_sent\"", "\"bytes_received\"",
                            "\"compute_seconds\"", "\"waiting_seconds\"", "\"step_seconds\""}) {
      EXPECT_NE(row.find(key), std::string::npos) << key << " in " << row;
    }
    std::smatch m;
    if (std::regex_search(row, m, std::regex("\"bytes_sent\":([0-9.e+]+)"))) bytes_sent += std::stod(m[1]);
  }
  EXPECT_EQ(local_steps, 12);
  EXPECT_GT(bytes_sent, 0);
  auto state = RunState();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->global_step(), 3u);
}

// Outer steps under faults: a third peer joins late and downloads the
// global weights, the outer momentum and the step; then a peer is
// SIGKILLed mid-run and the others finish with the same weights.
TEST_F(CollabTrainingTest, OuterStepsLateJoinerCatchesUpAndAKilledPeerDoesNotStopTheRun) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(
      R"({"run_id": "outer-faults", "sync": "outer", "local_steps": 2, "max_local_steps": 2,
          "target_batch_size": 16, "max_steps": 7, "codec": "fp16"})"));
  Subprocess a = StartPeer("a", {});
  Subprocess b = StartPeer("b", {});
  ASSERT_NO_FATAL_FAILURE(WaitForSteps("a", 2));
  Subprocess c = StartPeer("c", {});
  // Once c holds the collaboration's state, b dies; from then on a and c
  // are both needed for every round (target 16 = two peers' H steps, and
  // no peer takes more than H local steps a round: with the default 2H, a
  // alone could open the next round while the one with dead b is still
  // failing, and both rounds were lost, 1 run in 5).
  ASSERT_TRUE(WaitForLog("c.log", "resynchronised (late join)")) << testing::ReadLog(dir_ + "/c.log");
  b.Signal(SIGKILL);
  (void)b.Wait(absl::Seconds(10));
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(a, "a", absl::Minutes(5)));
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(c, "c", absl::Minutes(5)));
  const std::string la = testing::ReadLog(dir_ + "/a.log"), lc = testing::ReadLog(dir_ + "/c.log");
  EXPECT_GE(StepHashes(lc).size(), 1u) << lc;
  std::map<int, std::string> agreed = AgreedStepHashes({{"a", la}, {"c", lc}});
  EXPECT_EQ(agreed.rbegin()->first, 7) << la << lc;
  std::regex final_line("final parameters ([0-9a-f]+)");
  std::smatch ma, mc;
  ASSERT_TRUE(std::regex_search(la, ma, final_line)) << la;
  ASSERT_TRUE(std::regex_search(lc, mc, final_line)) << lc;
  // Both end with the same weights. With b gone every round needs a and c;
  // one of them left out of the last round takes the last state from the
  // other, which serves it after finishing while a peer is behind (before
  // peers lingered, the one left out ended on weights of its own in 11 of
  // 12 runs of this test).
  EXPECT_EQ(ma[1].str(), mc[1].str()) << la << lc;
}

TEST_F(CollabTrainingTest, CoordinatorKilledAndRestartedMidRunTheRunContinues) {
  const std::string config =
      R"({"run_id": "restart", "target_batch_size": 8, "max_steps": 6, "codec": "none"})";
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(config));
  Subprocess a = StartPeer("a", {"--max_local_samples_per_step=4"});
  Subprocess b = StartPeer("b", {"--max_local_samples_per_step=4"});
  ASSERT_NO_FATAL_FAILURE(WaitForSteps("a", 2));
  coordinator_->Signal(SIGKILL);
  (void)coordinator_->Wait(absl::Seconds(10));
  std::this_thread::sleep_for(std::chrono::seconds(2));  // the peers see it gone
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(config, coordinator_port_));
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(a, "a", absl::Minutes(5)));
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(b, "b", absl::Minutes(5)));
  EXPECT_NE(testing::ReadLog(dir_ + "/coordinator.log").find("continuing at global step"), std::string::npos);
  std::stringstream log(testing::ReadLog(dir_ + "/a.log"));
  for (std::string l; std::getline(log, l);) {
    if (l[0] == 'W' || l.find("global step") != std::string::npos || l.find("resynchronised") != std::string::npos) {
      std::cout << "a: " << l.substr(0, 220) << "\n";
    }
  }
  auto ha = StepHashes(testing::ReadLog(dir_ + "/a.log")), hb = StepHashes(testing::ReadLog(dir_ + "/b.log"));
  EXPECT_EQ(ha.rbegin()->first, 6) << testing::ReadLog(dir_ + "/a.log");
  for (const auto& [step, hash] : ha) {
    if (hb.count(step)) {
      EXPECT_EQ(hb[step], hash) << "step " << step;
    }
  }
}

// The coordinator and peer c die together (SIGKILL) after step 2; the
// coordinator comes back on its ledger, and d joins late. With target 12 and
// at most 4 samples per peer a step, a and b cannot step without d, so d
// must download the state of the step the coordinator restarted at, which no
// round of the new process made: a and b, the peers the restarted
// coordinator knew, confirm its hash (c, dead, falls silent). Before the
// restarted coordinator let them, d gave up with DATA_LOSS and the run hung.
TEST_F(CollabTrainingTest, ALateJoinerAfterACoordinatorRestartTakesTheStateTheKnownPeersConfirm) {
  const std::string config =
      R"({"run_id": "restart-join", "target_batch_size": 12, "max_steps": 6, "codec": "none"})";
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(config));
  Subprocess a = StartPeer("a", {"--max_local_samples_per_step=4"});
  Subprocess b = StartPeer("b", {"--max_local_samples_per_step=4"});
  Subprocess c = StartPeer("c", {"--max_local_samples_per_step=4"});
  ASSERT_NO_FATAL_FAILURE(WaitForSteps("a", 2));
  c.Signal(SIGKILL);
  coordinator_->Signal(SIGKILL);
  (void)c.Wait(absl::Seconds(10));
  (void)coordinator_->Wait(absl::Seconds(10));
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(config, coordinator_port_));
  Subprocess d = StartPeer("d", {"--max_local_samples_per_step=4"});
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExits({{&a, "a"}, {&b, "b"}, {&d, "d"}}, absl::Minutes(5)));
  const std::string dlog = testing::ReadLog(dir_ + "/d.log");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(dlog, m, std::regex("downloaded the state of global step ([0-9]+)")))
      << dlog;
  const int joined_at = std::stoi(m[1]);
  EXPECT_GE(joined_at, 2) << dlog;
  std::map<int, std::string> agreed =
      AgreedStepHashes({{"a", testing::ReadLog(dir_ + "/a.log")},
                        {"b", testing::ReadLog(dir_ + "/b.log")},
                        {"d", dlog}});
  EXPECT_EQ(agreed.rbegin()->first, 6);
  // d trained in the steps after it joined (no step opens without it).
  EXPECT_EQ(StepHashes(dlog).rbegin()->first, 6) << dlog;
}

// b is stopped (SIGSTOP) past the coordinator's heartbeat TTL (5 s) and
// evicted; a cannot step alone (target 8, 4 samples a peer). Continued, b
// learns it is no longer a member and stops with an error that says to
// restart it (before, it trained on unheard and the run hung); restarted,
// as a container's restart policy would, it joins anew, catches up from a,
// and the two finish together.
TEST_F(CollabTrainingTest, APeerEvictedWhileStoppedSaysSoAndARestartFinishesTheRun) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(
      R"({"run_id": "evicted", "target_batch_size": 8, "max_steps": 5, "codec": "none"})"));
  Subprocess a = StartPeer("a", {"--max_local_samples_per_step=4"});
  Subprocess b = StartPeer("b", {"--max_local_samples_per_step=4"});
  ASSERT_NO_FATAL_FAILURE(WaitForSteps("b", 2));
  b.Signal(SIGSTOP);
  const bool evicted = WaitForLog("coordinator.log", "evicted (no heartbeat)", absl::Seconds(30));
  b.Signal(SIGCONT);
  ASSERT_TRUE(evicted) << testing::ReadLog(dir_ + "/coordinator.log");
  auto code = b.Wait(absl::Minutes(2));
  ASSERT_TRUE(code.ok() && *code != 0) << testing::ReadLog(dir_ + "/b.log");
  EXPECT_NE(testing::ReadLog(dir_ + "/b.log").find("restart it to join again"), std::string::npos)
      << testing::ReadLog(dir_ + "/b.log");
  Subprocess b2 = StartPeer("b2", {"--max_local_samples_per_step=4"});
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExits({{&a, "a"}, {&b2, "b2"}}, absl::Minutes(3)));
  const std::string lb2 = testing::ReadLog(dir_ + "/b2.log");
  EXPECT_NE(lb2.find("resynchronised (late join)"), std::string::npos) << lb2;
  std::map<int, std::string> agreed = AgreedStepHashes(
      {{"a", testing::ReadLog(dir_ + "/a.log")}, {"b", testing::ReadLog(dir_ + "/b.log")}, {"b2", lb2}});
  EXPECT_EQ(agreed.rbegin()->first, 5);
}

// The dataset service is SIGKILLed after the first global step and comes
// back on the same port 6 s later. Each peer holds two downloaded chunks
// ahead of the one it trains and fetches the next one every second step, so
// its download at step 2 meets the outage: the resumable client retries
// with back-off, the peers keep training meanwhile, and the run finishes
// with the same parameters everywhere and every sample counted once.
TEST_F(CollabTrainingTest, DatasetServiceRestartedMidRunTheDownloadsResume) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(
      R"({"run_id": "dataset-restart", "target_batch_size": 8, "max_steps": 10, "codec": "none"})"));
  Subprocess a = StartPeer("a", {"--max_local_samples_per_step=4"});
  Subprocess b = StartPeer("b", {"--max_local_samples_per_step=4"});
  ASSERT_NO_FATAL_FAILURE(WaitForSteps("a", 1));
  const int port = dataset_port_;
  dataset_->Signal(SIGKILL);
  (void)dataset_->Wait(absl::Seconds(10));
  std::this_thread::sleep_for(std::chrono::seconds(6));
  ASSERT_NO_FATAL_FAILURE(StartDataset(port));
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(a, "a", absl::Minutes(5)));
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(b, "b", absl::Minutes(5)));
  const std::string la = testing::ReadLog(dir_ + "/a.log"), lb = testing::ReadLog(dir_ + "/b.log");
  auto ha = StepHashes(la), hb = StepHashes(lb);
  ASSERT_EQ(ha.size(), 10u) << la;
  EXPECT_EQ(ha, hb);
  // The outage was met and survived by retrying, not by skipping chunks.
  std::regex retried("chunks downloaded \\(([0-9]+) after retries\\), [0-9]+ completed, ([0-9]+) failed");
  int retries = 0;
  for (const std::string* log : {&la, &lb}) {
    std::smatch m;
    ASSERT_TRUE(std::regex_search(*log, m, retried)) << *log;
    retries += std::stoi(m[1]);
  }
  EXPECT_GE(retries, 1) << la << lb;
  auto state = RunState();
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->global_step(), 10u);
  EXPECT_EQ(state->chunks_leased(), 0u);
  // 10 steps of 8 samples, each counted once (the chunks being trained at
  // the end count with what was trained of them).
  EXPECT_EQ(state->samples_done(), 80u);
  std::cout << "samples done " << state->samples_done() << ", retried downloads " << retries << "\n";
}

// Equivalence with real processes and the real butterfly: two peers at
// batch 4 averaging without compression for 3 global steps end with the
// weights of one trainer at batch 8 that trains, at each step, the same 8
// samples (from the peers' --trained_keys_log, read from the same chunk
// files), up to float rounding.
TEST_F(CollabTrainingTest, TwoPeersEqualOneTrainerAtTheirCombinedBatch) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(
      R"({"run_id": "equivalence", "target_batch_size": 8, "max_steps": 3, "codec": "none"})"));
  Subprocess a = StartPeer("a", {"--max_local_samples_per_step=4", "--lr=1e-3",
                                 "--trained_keys_log=" + dir_ + "/a.keys"});
  Subprocess b = StartPeer("b", {"--max_local_samples_per_step=4", "--lr=1e-3",
                                 "--trained_keys_log=" + dir_ + "/b.keys"});
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(a, "a", absl::Minutes(4)));
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(b, "b", absl::Minutes(4)));
  ASSERT_EQ(StepHashes(testing::ReadLog(dir_ + "/a.log")), StepHashes(testing::ReadLog(dir_ + "/b.log")));
  // Which samples each global step saw.
  std::map<int, std::set<std::string>> step_keys;
  for (const char* name : {"a", "b"}) {
    std::stringstream lines(testing::ReadLog(dir_ + "/" + name + ".keys"));
    int step;
    std::string key;
    while (lines >> step >> key) step_keys[step].insert(key);
  }
  ASSERT_EQ(step_keys.size(), 3u);
  for (const auto& [step, keys] : step_keys) ASSERT_EQ(keys.size(), 8u) << "step " << step;
  // The same chunk files, fetched from the dataset service.
  auto fetch = Subprocess::Start(
      {RunfilePath("services/dataset/dataset_fetch"), absl::StrCat("--server=127.0.0.1:", dataset_port_),
       "--auth_token_file=" + dir_ + "/token", "get-all", dir_ + "/chunks"},
      dir_ + "/fetch.log");
  ASSERT_TRUE(fetch.ok());
  ASSERT_EQ(*fetch->Wait(absl::Seconds(60)), 0) << testing::ReadLog(dir_ + "/fetch.log");
  auto listing = data::ListSamples(dir_ + "/chunks");
  ASSERT_TRUE(listing.ok()) << listing.status();
  // One trainer at batch 8 with the peers' settings.
  training::TrainerOptions o;
  o.model_dir = std::string(std::getenv("FIXTURES_DIR")) + "/tiny-sd1/model";
  o.output_dir = dir_ + "/reference";
  o.batch_size = 8;
  o.resolution = 32;
  o.lr = 1e-3;
  o.max_steps = 3;
  o.seed = 1;
  auto reference = training::Trainer::Create(o);
  ASSERT_TRUE(reference.ok()) << reference.status();
  for (const auto& [step, keys] : step_keys) {
    std::vector<data::SampleRef> refs;
    for (const auto& ref : listing->samples) {
      if (keys.count(ref.key)) refs.push_back(ref);
    }
    ASSERT_EQ(refs.size(), 8u);
    data::LoaderOptions lo = training::LoaderOptionsFor(o);
    lo.num_workers = 1;
    auto loader = data::DataLoader::Start(refs, lo);
    ASSERT_TRUE(loader.ok()) << loader.status();
    auto batch = (*loader)->Next();
    ASSERT_TRUE(batch.ok() && batch->has_value()) << batch.status();
    ASSERT_EQ((**batch).pixels.size(0), 8);
    ASSERT_TRUE((*reference)->AccumulateBatch(**batch).ok());
    auto r = (*reference)->ApplyUpdate(nullptr);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->step, step);
  }
  // The designated writer's last checkpoint holds the peers' fp32 weights.
  std::string state = dir_ + "/a/checkpoint-3/training_state.safetensors";
  if (!std::filesystem::exists(state)) state = dir_ + "/b/checkpoint-3/training_state.safetensors";
  auto peers = model::LoadTensors(state);
  ASSERT_TRUE(peers.ok()) << peers.status();
  // Equal to 1e-4 of each tensor's scale, except where Adam's first steps
  // amplify the rounding of near-zero gradients (train_step_check.h).
  int64_t differing = 0, total = 0;
  double worst = 0;
  for (const auto& [name, value] : (*reference)->ParametersForTest()) {
    ASSERT_TRUE(peers->count("param." + name)) << name;
    const at::Tensor& theirs = peers->at("param." + name);
    ASSERT_EQ(theirs.sizes(), value.sizes()) << name;
    const double scale = std::max(value.abs().max().item<double>(), 0.1);
    at::Tensor diff = (theirs - value).abs();
    differing += (diff > 1e-4 * scale).sum().item<int64_t>();
    total += value.numel();
    worst = std::max(worst, diff.max().item<double>() / scale);
  }
  std::cout << differing << " of " << total << " weights differ by more than 1e-4 of their tensor's scale; "
            << "largest difference " << worst << " of scale\n";
  EXPECT_LE(differing, total * 3 / 100);
  EXPECT_GT(total, 0);
}

TEST_F(CollabTrainingTest, SurvivorFinishesWhenAPeerIsKilled) {
  ASSERT_NO_FATAL_FAILURE(
      StartCoordinator(R"({"run_id": "kill", "target_batch_size": 8, "max_steps": 6, "codec": "fp16"})"));
  Subprocess a = StartPeer("a", {"--max_local_samples_per_step=8"});
  Subprocess b = StartPeer("b", {"--max_local_samples_per_step=8"});
  // Let them train together, then kill b without warning.
  ASSERT_NO_FATAL_FAILURE(WaitForSteps("b", 2));
  b.Signal(SIGKILL);
  (void)b.Wait(absl::Seconds(10));
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(a, "a", absl::Minutes(5)));
  auto ha = StepHashes(testing::ReadLog(dir_ + "/a.log"));
  EXPECT_EQ(ha.rbegin()->first, 6) << testing::ReadLog(dir_ + "/a.log");
  // What the survivor saw, for the test log.
  std::stringstream log(testing::ReadLog(dir_ + "/a.log"));
  for (std::string l; std::getline(log, l);) {
    if (l.find("global step") != std::string::npos || l.find("failed") != std::string::npos) {
      std::cout << l.substr(l.find(']') + 2) << "\n";
    }
  }
}

}  // namespace
}  // namespace dd
