// Attacks by a peer on late joiners, as the donor of their training state:
// real coordinator, dataset and trainer processes over real gRPC. The
// dishonest donor trains honestly but serves states changed as the test
// says; a late joiner must refuse them, take an honest peer's state, and
// train on with the same weights as everyone else.
#include <map>
#include <regex>
#include <string>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/testing/collab_fixture.h"

namespace dd {
namespace {

using testing::PeerIdIn;
using testing::Subprocess;

class DonorAttacks : public testing::CollabFixture,
                     public ::testing::WithParamInterface<std::string> {};

// Peer a (the liar) joins first and b second, so their peer ids sort a
// before b and the late joiner c asks a first. Each of a and b offers 4
// samples a step and the target is 8: neither steps alone, so both start
// from the run's initial weights; c joins after two steps.
TEST_P(DonorAttacks, ALateJoinerRefusesTheStateAndTakesAnHonestPeers) {
  const std::string mode = GetParam();
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(
      R"({"run_id": "donor", "target_batch_size": 8, "max_steps": 6, "codec": "none"})"));
  Subprocess a = StartPeer("a", {"--max_local_samples_per_step=4",
                                 "--serve_tampered_state_for_test=" + mode});
  for (int i = 0; i < 600 && PeerIdIn(testing::ReadLog(dir_ + "/a.log")).empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  Subprocess b = StartPeer("b", {"--max_local_samples_per_step=4"});
  ASSERT_NO_FATAL_FAILURE(WaitForSteps("a", 2));
  Subprocess c = StartPeer("c", {"--max_local_samples_per_step=4"});
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(a, "a", absl::Minutes(5)));
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(b, "b", absl::Minutes(5)));
  ASSERT_NO_FATAL_FAILURE(ExpectCleanExit(c, "c", absl::Minutes(5)));
  const std::string log_a = testing::ReadLog(dir_ + "/a.log");
  const std::string log_c = testing::ReadLog(dir_ + "/c.log");
  const std::string liar = PeerIdIn(log_a), honest = PeerIdIn(testing::ReadLog(dir_ + "/b.log"));
  ASSERT_FALSE(liar.empty()) << log_a;
  ASSERT_LT(liar, honest) << "c would not ask the liar first";

  // c asked the liar and refused what it served: a state too large to be
  // this model's before storing it, or a state whose weights are not
  // finite or not the ones the round's members confirm.
  if (mode == "oversize") {
    EXPECT_NE(log_c.find("state download from a "), std::string::npos) << log_c;
    EXPECT_NE(log_c.find("the donor announces a state of"), std::string::npos) << log_c;
  } else {
    EXPECT_NE(log_c.find("from " + liar + " refused"), std::string::npos) << log_c;
    EXPECT_NE(log_c.find(mode == "nan" ? "holds NaN or infinite values" : "are not those the round's members confirm"),
              std::string::npos)
        << log_c;
  }
  // ... and took b's: every step any two peers logged has one hash, the
  // late joiner's included, up to the last step.
  EXPECT_NE(log_c.find("resynchronised (late join): downloaded the state of global step"),
            std::string::npos)
      << log_c;
  std::map<int, std::string> agreed = testing::AgreedStepHashes(
      {{"a", log_a}, {"b", testing::ReadLog(dir_ + "/b.log")}, {"c", log_c}});
  ASSERT_FALSE(agreed.empty());
  EXPECT_EQ(agreed.rbegin()->first, 6);
  // The state c kept has the weights a and b logged after that step (c may
  // take no part in a later round: each takes the first two reports of 4).
  std::regex synced("downloaded the state of global step ([0-9]+) .* params ([0-9a-f]+)");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(log_c, m, synced)) << log_c;
  auto it = agreed.find(std::stoi(m[1]));
  ASSERT_NE(it, agreed.end()) << m[0];
  EXPECT_EQ(it->second, m[2].str()) << m[0];
}

INSTANTIATE_TEST_SUITE_P(Tampering, DonorAttacks, ::testing::Values("weights", "nan", "oversize"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace dd
