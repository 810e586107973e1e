// A collaboration of real processes for the tests that run one:
// make_shapes_dataset writes a captioned dataset (96 samples of 32 px);
// dataset_server serves it in chunks of 8; the coordinator runs the run
// configuration a test gives it (token auth, an admin token, 30 s rounds, 5 s
// heartbeat TTL); trainer peers (batch 4, the fixture's tiny SD model) join
// it. Every process logs to a file in the test's temporary folder.
//
// The binaries must be in the test's `data`: //services/coordinator,
// //services/dataset:dataset_server, //trainer:train,
// //trainer/tools:make_shapes_dataset.
#ifndef TESTS_TESTING_COLLAB_FIXTURE_H_
#define TESTS_TESTING_COLLAB_FIXTURE_H_

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/rpc/channel.h"
#include "gtest/gtest.h"
#include "tests/testing/subprocess.h"
#include "trainer/collab/coordinator_client.h"

namespace dd::testing {

inline constexpr char kToken[] = "collab-integration-token-0123456789";
inline constexpr char kAdminToken[] = "collab-integration-admin-token-01234";

// The peer id a trainer's log says it joined as ("joined run R as peer-..."),
// or "" before it has.
inline std::string PeerIdIn(const std::string& log) {
  std::smatch m;
  static const std::regex joined("joined run [^ ]+ as (peer-[0-9a-z-]+)");
  return std::regex_search(log, m, joined) ? m[1].str() : "";
}

// "global step N: ... params HASH" lines of a peer's log.
inline std::map<int, std::string> StepHashes(const std::string& log) {
  std::map<int, std::string> out;
  std::regex line("global step ([0-9]+):.* params ([0-9a-f]+)");
  std::stringstream ss(log);
  for (std::string l; std::getline(ss, l);) {
    std::smatch m;
    if (std::regex_search(l, m, line)) out[std::stoi(m[1])] = m[2];
  }
  return out;
}

// The one hash each step has across peers' logs (peer name -> log): a step
// that two peers both logged must have the same hash in both (a failure
// names the peer and the step).
inline std::map<int, std::string> AgreedStepHashes(
    const std::vector<std::pair<std::string, std::string>>& logs) {
  std::map<int, std::string> agreed;
  for (const auto& [name, log] : logs) {
    for (const auto& [step, hash] : StepHashes(log)) {
      auto [it, fresh] = agreed.emplace(step, hash);
      EXPECT_EQ(it->second, hash) << name << " at step " << step;
    }
  }
  return agreed;
}

class CollabFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::string(std::getenv("TEST_TMPDIR")) + "/collab";
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ + "/token") << kToken << "\n";
    std::ofstream(dir_ + "/admin") << kAdminToken << "\n";
    auto p = Subprocess::Start({testing::RunfilePath("trainer/tools/make_shapes_dataset"),
                                "--out_dir=" + dir_ + "/data", "--num_samples=96", "--width=32",
                                "--height=32"},
                               dir_ + "/tools.log");
    ASSERT_TRUE(p.ok());
    ASSERT_EQ(*p->Wait(absl::Seconds(60)), 0);
    ASSERT_NO_FATAL_FAILURE(StartDataset(0));
  }

  // The dataset service on `port` (0: any); the same work dir (manifest)
  // every time, as a restarted service would have.
  void StartDataset(int port) {
    std::filesystem::remove(dir_ + "/dport");
    auto server = Subprocess::Start(
        {testing::RunfilePath("services/dataset/dataset_server"), "--dataset_dir=" + dir_ + "/data",
         "--work_dir=" + dir_ + "/dwork", "--host=127.0.0.1", absl::StrCat("--port=", port),
         "--port_file=" + dir_ + "/dport", "--chunk_size=8", "--auth_token_file=" + dir_ + "/token",
         // Volunteers that joined with an invitation read with their credential.
         "--peer_public_key_file=" + dir_ + "/credential.pub"},
        absl::StrCat(dir_, "/dataset", port == 0 ? "" : "-restarted", ".log"));
    ASSERT_TRUE(server.ok());
    dataset_ = std::make_unique<Subprocess>(std::move(*server));
    auto dport = testing::WaitForPortFile(dir_ + "/dport", absl::Seconds(30));
    ASSERT_TRUE(dport.ok());
    dataset_port_ = *dport;
  }

  void StartCoordinator(const std::string& config, int port = 0) {
    std::ofstream(dir_ + "/run.json") << config;
    std::filesystem::remove(dir_ + "/cport");
    auto c = Subprocess::Start(
        {testing::RunfilePath("services/coordinator/coordinator"), "--config=" + dir_ + "/run.json",
         "--db_dir=" + dir_ + "/ledger", absl::StrCat("--dataset_address=127.0.0.1:", dataset_port_),
         "--host=127.0.0.1", absl::StrCat("--port=", port), "--port_file=" + dir_ + "/cport",
         "--auth_token_file=" + dir_ + "/token", "--round_timeout=30s", "--heartbeat_ttl=5s",
         "--admin_token_file=" + dir_ + "/admin", "--credential_public_key_out=" + dir_ + "/credential.pub"},
        dir_ + "/coordinator.log");
    ASSERT_TRUE(c.ok());
    coordinator_ = std::make_unique<Subprocess>(std::move(*c));
    auto bound = testing::WaitForPortFile(dir_ + "/cport", absl::Seconds(30));
    ASSERT_TRUE(bound.ok()) << testing::ReadLog(dir_ + "/coordinator.log");
    coordinator_address_ = absl::StrCat("127.0.0.1:", *bound);
    coordinator_port_ = *bound;
  }

  Subprocess StartPeer(const std::string& name, const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {
        testing::RunfilePath("trainer/train"), "--coordinator=" + coordinator_address_,
        "--model_dir=" + std::string(std::getenv("FIXTURES_DIR")) + "/tiny-sd1/model",
        "--output_dir=" + dir_ + "/" + name, "--batch_size=4", "--resolution=32",
        "--auth_token_file=" + dir_ + "/token", "--save_steps=2", "--seed=1",
        "--peer_name=" + name, "--dataloader_num_workers=1"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto p = Subprocess::Start(argv, dir_ + "/" + name + ".log");
    EXPECT_TRUE(p.ok()) << p.status();
    return std::move(*p);
  }

  // Waits (up to 2 minutes) until peer `name` has logged `steps` global steps.
  void WaitForSteps(const std::string& name, size_t steps) {
    const std::string log = dir_ + "/" + name + ".log";
    for (int i = 0; i < 2400 && StepHashes(testing::ReadLog(log)).size() < steps; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_GE(StepHashes(testing::ReadLog(log)).size(), steps) << testing::ReadLog(log);
  }

  // Waits (up to `timeout`) until `log` (a file in dir_, e.g. "c.log")
  // holds `text`; returns whether it does.
  bool WaitForLog(const std::string& log, const std::string& text,
                  absl::Duration timeout = absl::Minutes(2)) {
    const std::string path = dir_ + "/" + log;
    for (absl::Time until = absl::Now() + timeout;
         testing::ReadLog(path).find(text) == std::string::npos; absl::SleepFor(absl::Milliseconds(50))) {
      if (absl::Now() >= until) return false;
    }
    return true;
  }

  // Waits for peer `name` to exit and requires exit status 0.
  void ExpectCleanExit(Subprocess& peer, const std::string& name, absl::Duration timeout) {
    auto code = peer.Wait(timeout);
    ASSERT_TRUE(code.ok() && *code == 0) << testing::ReadLog(dir_ + "/" + name + ".log");
  }

  // ExpectCleanExit for each peer (subprocess, name), in order, each within
  // `timeout`; a failure shows every peer's log (one peer hangs when
  // another could not serve it).
  void ExpectCleanExits(const std::vector<std::pair<Subprocess*, std::string>>& peers,
                        absl::Duration timeout) {
    for (const auto& [peer, name] : peers) {
      auto code = peer->Wait(timeout);
      if (code.ok() && *code == 0) continue;
      std::string logs;
      for (const auto& [other, other_name] : peers) {
        logs += "== " + other_name + "\n" + testing::ReadLog(dir_ + "/" + other_name + ".log");
      }
      FAIL() << name << " did not finish cleanly\n" << logs;
    }
  }

  // The coordinator's run state, asked with the run's token.
  absl::StatusOr<collab::cv1::RunState> RunState() {
    SecurityConfig security;
    security.auth_token = kToken;
    auto channel = MakeChannel(coordinator_address_, security);
    if (!channel.ok()) return channel.status();
    collab::CoordinatorClient client(*channel);
    return client.GetRunState();
  }

  std::string dir_;
  int dataset_port_ = 0;
  std::string coordinator_address_;
  int coordinator_port_ = 0;
  std::unique_ptr<Subprocess> dataset_, coordinator_;
};

}  // namespace dd::testing

#endif  // TESTS_TESTING_COLLAB_FIXTURE_H_
