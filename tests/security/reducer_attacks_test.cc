// Attacks by a peer on the averaging, as a member of the run: real
// coordinator, dataset and trainer processes over real gRPC. Each test is
// the attacker's move, then a check that it failed and that the honest
// peers' run went on with equal weights.
#include <signal.h>

#include <filesystem>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/testing/collab_fixture.h"

namespace dd {
namespace {

using testing::PeerIdIn;
using testing::StepHashes;
using testing::Subprocess;

class ReducerAttacks : public testing::CollabFixture {};

// Peer c answers every part of its span with ten times the mean. The run
// audits two parts of every span a round (each by one of the two others).
// c offers 4 samples a step, a and b 6 each in batches of 2, and a round
// opens at 12: any round c is in needs both a and b (4 + 6 < 12), so its
// first one is audited by both honest members, who both accuse it; c is
// banned, and a and b (6 + 6) step on together. (In a round of two, the
// one honest auditor's accusation abandons the round but bans nobody: one
// accuser alone could be the liar.)
TEST_F(ReducerAttacks, AReducerReturningAScaledMeanIsCaughtBannedAndTheRunGoesOn) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(
      R"({"run_id": "audit", "target_batch_size": 12, "max_steps": 6, "codec": "fp16",
          "open_run": true, "aggregation": "mean", "reducer_audits": 2})"));
  Subprocess c = StartPeer("c", {"--max_local_samples_per_step=4",
                                 "--scale_reduced_means_for_test=10"});
  for (int i = 0; i < 600 && PeerIdIn(testing::ReadLog(dir_ + "/c.log")).empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  Subprocess a = StartPeer("a", {"--batch_size=2", "--max_local_samples_per_step=6"});
  Subprocess b = StartPeer("b", {"--batch_size=2", "--max_local_samples_per_step=6"});
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(a, "a", absl::Minutes(5)));
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(b, "b", absl::Minutes(5)));
  c.Signal(SIGKILL);  // it may still be trying to rejoin
  (void)c.Wait(absl::Seconds(10));
  const std::string log_a = testing::ReadLog(dir_ + "/a.log");
  const std::string log_b = testing::ReadLog(dir_ + "/b.log");
  const std::string log_c = testing::ReadLog(dir_ + "/c.log");
  const std::string coordinator = testing::ReadLog(dir_ + "/coordinator.log");
  const std::string cheat = PeerIdIn(log_c);
  ASSERT_FALSE(cheat.empty()) << log_c;
  // Caught by an audit, banned at the coordinator.
  EXPECT_NE((log_a + log_b).find("audits found the reduction of " + cheat + " dishonest"),
            std::string::npos)
      << log_a;
  EXPECT_NE(coordinator.find("peer " + cheat + " banned for"), std::string::npos) << coordinator;
  EXPECT_NE(coordinator.find("found dishonest by two auditors"), std::string::npos);
  // No honest reducer was accused.
  std::regex accused("found reducer (peer-[0-9a-z-]+) dishonest");
  std::stringstream lines(coordinator);
  int accusations = 0;
  for (std::string l; std::getline(lines, l);) {
    std::smatch m;
    if (!std::regex_search(l, m, accused)) continue;
    EXPECT_EQ(m[1].str(), cheat) << l;
    ++accusations;
  }
  EXPECT_GE(accusations, 2);
  // The honest peers went on: the same weights after every step both
  // applied, up to the last one; a scaled mean was never applied (each step
  // either has both hashes equal or was abandoned by both).
  auto ha = StepHashes(log_a), hb = StepHashes(log_b);
  ASSERT_FALSE(ha.empty()) << log_a;
  EXPECT_EQ(ha, hb) << log_a << log_b << coordinator;
  EXPECT_EQ(ha.rbegin()->first, 6) << log_a;
}

}  // namespace
}  // namespace dd
