// A member of a butterfly round killed with SIGKILL mid-round (a real
// process): the other members finish within the timeouts, agree bit for bit,
// and report that the dead member's span was not averaged.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "common/rpc/server.h"
#include "common/rpc/testing/test_run_credentials.h"
#include "gtest/gtest.h"
#include "tests/testing/subprocess.h"
#include "trainer/averaging/butterfly.h"

namespace dd {
namespace {

using averaging::AllReduceOptions;
using averaging::AveragerService;
using averaging::ButterflyAllReduce;
using averaging::RoundSpec;

constexpr char kToken[] = "averaging-kill-token-0123456789";

TEST(AveragingKill, SurvivorsFinishWhenAMemberIsKilledMidRound) {
  std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/kill";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/token") << kToken;
  const uint64_t length = 6 << 20;  // 24 MB per member
  // The run's credential key, shared with the victim process, which signs
  // its own credential with it (there is no coordinator here).
  dd::testing::TestRunCredentials credentials(kToken, dir + "/credential_key.pem");
  // Member 3 is a separate process whose upload is capped at 8 Mbit/s (its
  // 9 MB take ~9 s), so it is still sending when it is killed. The timeouts
  // are generous: on a loaded 2-core CI machine a live in-process member
  // can go quiet for more than a second, and must not be excluded.
  auto victim = testing::Subprocess::Start(
      {testing::RunfilePath("trainer/averaging/averaging_member"), "--listen=127.0.0.1:0",
       "--port_file=" + dir + "/port", "--spec_file=" + dir + "/spec.json", "--index=3",
       absl::StrCat("--length=", length), "--max_send_mbps=8", "--codec=fp16",
       "--sender_timeout_s=4", "--reducer_timeout_s=8", "--auth_token_file=" + dir + "/token",
       "--credential_key_file=" + dir + "/credential_key.pem"},
      dir + "/victim.log");
  ASSERT_TRUE(victim.ok());
  auto victim_port = testing::WaitForPortFile(dir + "/port", absl::Seconds(30));
  ASSERT_TRUE(victim_port.ok());

  struct Member {
    AveragerService service;
    std::unique_ptr<ServiceHost> host;
  };
  std::vector<std::unique_ptr<Member>> members;
  RoundSpec spec;
  spec.round_id = 7;
  for (int i = 0; i < 3; ++i) {
    auto m = std::make_unique<Member>();
    ServerOptions o;
    o.listen_address = "127.0.0.1:0";
    o.security = credentials.Server();
    m->host = std::move(*ServiceHost::Start(o, {&m->service}));
    spec.peer_ids.push_back(absl::StrCat("peer-", i));
    spec.addresses.push_back(absl::StrCat("127.0.0.1:", m->host->port()));
    members.push_back(std::move(m));
  }
  spec.peer_ids.push_back("peer-3");
  spec.addresses.push_back(absl::StrCat("127.0.0.1:", *victim_port));
  spec.span_starts = averaging::SplitSpans(length, 4);
  {
    std::ofstream out(dir + "/spec.json.tmp");
    out << "{\"round_id\": 7, \"peer_ids\": [\"peer-0\", \"peer-1\", \"peer-2\", \"peer-3\"], "
        << "\"addresses\": [\"" << spec.addresses[0] << "\", \"" << spec.addresses[1] << "\", \""
        << spec.addresses[2] << "\", \"" << spec.addresses[3] << "\"], "
        << "\"shares\": [1, 1, 1, 1]}\n";
  }
  std::filesystem::rename(dir + "/spec.json.tmp", dir + "/spec.json");

  AllReduceOptions options;
  options.codec = averaging::CodecId::kFp16;
  options.sender_timeout = absl::Seconds(4);
  options.reducer_timeout = absl::Seconds(8);
  options.deadline = absl::Now() + absl::Seconds(60);
  std::vector<std::vector<float>> values(3, std::vector<float>(length));
  std::vector<absl::StatusOr<averaging::AllReduceResult>> results(3, absl::UnknownError(""));
  std::vector<std::thread> threads;
  absl::Time t0 = absl::Now();
  for (int i = 0; i < 3; ++i) {
    for (uint64_t k = 0; k < length; ++k) values[i][k] = std::sin(0.001f * k + i) * (1 + i);
    threads.emplace_back([&, i] {
      ButterflyAllReduce allreduce(&members[i]->service,
                                   credentials.Peer(absl::StrCat("peer-", i)));
      RoundSpec s = spec;
      s.my_index = i;
      results[i] = allreduce.Run(s, options, values[i].data(), length, 1.0);
    });
  }
  absl::SleepFor(absl::Milliseconds(1000));  // the victim is sending by now
  victim->Signal(SIGKILL);
  auto code = victim->Wait(absl::Seconds(10));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 128 + SIGKILL);
  for (auto& t : threads) t.join();
  absl::Duration took = absl::Now() - t0;
  EXPECT_LT(took, absl::Seconds(30));
  int excluded = 0;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].status();
    excluded += results[i]->senders_excluded;
    // The survivors' spans still got averaged, the last parts over the
    // three survivors only (weights renormalised).
    for (int span = 0; span < 3; ++span) EXPECT_EQ(results[i]->contributors[span], 3u);
    // The dead member's span was either reduced before it died (uncapped
    // peers sent to it quickly) or kept local: at least 3/4 averaged.
    EXPECT_GE(results[i]->fraction_averaged, 0.75 - 1e-9);
  }
  // It died while still sending: every survivor's reducer stopped waiting
  // for it after the sender timeout.
  EXPECT_EQ(excluded, 3);
  // Survivors agree on every span that was averaged.
  for (uint64_t k = 0; k < spec.span_starts[3]; ++k) {
    ASSERT_EQ(values[0][k], values[1][k]) << k;
    ASSERT_EQ(values[0][k], values[2][k]) << k;
  }
  LOG(INFO) << "round finished " << absl::FormatDuration(took) << " after the kill started";
}

}  // namespace
}  // namespace dd
