// Attacks by a peer on the averaging, as a sender of gradients: real
// coordinator, dataset and trainer processes over real gRPC. The attacker
// trains and reduces honestly but sends its contributions poisoned; the
// honest peers must apply steps the attacker did not steer, and train on
// with the same weights.
#include <iostream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/rpc/auth.h"
#include "common/rpc/channel.h"
#include "gtest/gtest.h"
#include "protos/averaging.grpc.pb.h"
#include "protos/coordinator.grpc.pb.h"
#include "tests/testing/collab_fixture.h"

namespace dd {
namespace {

using testing::PeerIdIn;
using testing::StepHashes;
using testing::Subprocess;

class ContributionAttacks : public testing::CollabFixture {};

// One applied step as a peer logs it.
struct StepLine {
  int step = 0;
  int members = 0;
  double round_samples = 0;  // what the round assigned its members in all
  double weight = 0;         // the largest total weight a part was averaged with
  double grad_norm = 0;      // of the averaged gradient the peer applied
};

std::vector<StepLine> StepLines(const std::string& log) {
  static const std::regex line(
      "global step ([0-9]+): ([0-9]+) members, [0-9]+ local samples of ([0-9]+), .*weight "
      "([-+0-9.e]+|inf|nan), .*grad norm ([-+0-9.e]+|inf|nan),");
  std::vector<StepLine> out;
  std::stringstream lines(log);
  for (std::string l; std::getline(lines, l);) {
    std::smatch m;
    if (!std::regex_search(l, m, line)) continue;
    out.push_back({std::stoi(m[1]), std::stoi(m[2]), std::stod(m[3]), std::stod(m[4]),
                   std::stod(m[5])});
  }
  return out;
}

// Peer c sends every contribution with weight 1e300 (the round assigned it
// 4 samples) and its values times 1e20 (finite in float32), past its own
// norm bound. The run is open, so its reducers aggregate with CenteredClip.
// a and b offer 4 samples a step each and the target is 12: every round
// needs c, so every step the honest peers apply was averaged with c's
// poison in it. Each reducer counts a contribution with at most its
// assigned weight, so no part is averaged with more than the round's 12
// samples; CenteredClip bounds what an outlier moves the aggregate, so the
// applied gradient's norm stays that of honest gradients (about 3 for this
// model; the poison's is about 1e20).
TEST_F(ContributionAttacks, InflatedWeightAndHugeValuesDoNotSteerTheStep) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(
      R"({"run_id": "poison", "target_batch_size": 12, "max_steps": 5, "codec": "none",
          "open_run": true})"));
  Subprocess c = StartPeer("c", {"--max_local_samples_per_step=4",
                                 "--poison_contributions_for_test=1e20"});
  ASSERT_TRUE(WaitForLog("c.log", "joined run"));
  Subprocess a = StartPeer("a", {"--batch_size=2", "--max_local_samples_per_step=4"});
  Subprocess b = StartPeer("b", {"--batch_size=2", "--max_local_samples_per_step=4"});
  ASSERT_NO_FATAL_FAILURE(
      ExpectCleanExits({{&a, "a"}, {&b, "b"}, {&c, "c"}}, absl::Minutes(5)));
  const std::string log_a = testing::ReadLog(dir_ + "/a.log");
  const std::string log_b = testing::ReadLog(dir_ + "/b.log");
  const std::string log_c = testing::ReadLog(dir_ + "/c.log");
  ASSERT_NE(log_c.find("poisoned sender (a security test)"), std::string::npos) << log_c;

  for (const auto& [name, log] : {std::pair{"a", log_a}, std::pair{"b", log_b}}) {
    std::vector<StepLine> steps = StepLines(log);
    ASSERT_FALSE(steps.empty()) << name << "\n" << log;
    for (const StepLine& s : steps) {
      SCOPED_TRACE(absl::StrCat(name, " global step ", s.step));
      EXPECT_EQ(s.members, 3) << "a round without the attacker proves nothing";
      EXPECT_GT(s.weight, 0);
      EXPECT_LE(s.weight, s.round_samples) << "a claimed weight counted";
      EXPECT_LT(s.grad_norm, 1e3) << "the poison steered the step";
    }
  }
  // The run went on: equal weights after every step, up to the last.
  auto ha = StepHashes(log_a), hb = StepHashes(log_b);
  ASSERT_FALSE(ha.empty());
  EXPECT_EQ(ha, hb) << log_a << log_b;
  EXPECT_EQ(ha.rbegin()->first, 5) << log_a;
}

// A joined peer floods honest peer a's averaging service with parts for
// rounds that do not exist (yet): 96 in its own name with 1 MiB of data
// each, and 32 with no data but a 1 MiB sender id. A part for an unknown
// round is held for a while in case the round registers soon, but only up
// to 64 MiB counted by the whole request (and 4096 parts): the rest is
// refused at once. A sender id other than the credential's is refused at
// once, and its answer does not quote the megabyte (gRPC refuses trailing
// metadata over 16 KiB, failing the connection's other calls with it).
// None is ever served, and a and b train on with equal weights.
TEST_F(ContributionAttacks, PartsForUnknownRoundsAreHeldOnlyUpToTheirBound) {
  namespace cv1 = distdiff::coordinator::v1;
  namespace av1 = distdiff::averaging::v1;
  ASSERT_NO_FATAL_FAILURE(StartCoordinator(
      R"({"run_id": "held", "target_batch_size": 8, "max_steps": 6, "codec": "none"})"));
  Subprocess a = StartPeer("a", {"--max_local_samples_per_step=4"});
  Subprocess b = StartPeer("b", {"--max_local_samples_per_step=4"});
  ASSERT_NO_FATAL_FAILURE(WaitForSteps("a", 1));
  const std::string victim = PeerIdIn(testing::ReadLog(dir_ + "/a.log"));

  // The attacker joins (client-only) and finds a's address.
  SecurityConfig security;
  security.auth_token = testing::kToken;
  security.call_token = std::make_shared<CallToken>(testing::kToken);
  auto coordinator = cv1::Coordinator::NewStub(*MakeChannel(coordinator_address_, security));
  cv1::JoinRequest join;
  join.set_client_only(true);
  cv1::JoinResponse joined;
  grpc::Status s = coordinator->Join(MakeCallContext(absl::Seconds(30)).get(), join, &joined);
  ASSERT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  security.call_token->SetPeerCredential(joined.peer_token());
  cv1::ListPeersResponse peers;
  s = coordinator->ListPeers(MakeCallContext().get(), cv1::ListPeersRequest(), &peers);
  ASSERT_TRUE(s.ok()) << s.error_message();
  std::string address;
  for (const auto& p : peers.peers()) {
    if (p.peer_id() == victim) address = p.address();
  }
  ASSERT_FALSE(address.empty()) << peers.DebugString();

  auto averager = av1::Averager::NewStub(*MakeChannel(address, security));
  constexpr int kDataParts = 96, kIdParts = 32;
  std::vector<grpc::Status> answers(kDataParts + kIdParts);
  std::vector<std::thread> senders;
  for (int i = 0; i < kDataParts + kIdParts; ++i) {
    senders.emplace_back([&, i] {
      av1::ReducePartRequest part;
      part.set_round_id(1000000 + i);
      part.set_count(1);
      part.set_codec(av1::NONE);
      part.set_weight(1);
      if (i < kDataParts) {
        part.set_sender_peer_id(joined.peer_id());
        part.set_data(std::string(1 << 20, 'x'));
      } else {
        part.set_sender_peer_id(std::string(1 << 20, 'p'));
      }
      av1::ReducePartResponse response;
      answers[i] = averager->ReducePart(MakeCallContext(absl::Seconds(30)).get(), part, &response);
    });
  }
  for (std::thread& t : senders) t.join();
  int refused_at_bound = 0, held = 0;
  for (int i = 0; i < kDataParts; ++i) {
    const grpc::Status& answer = answers[i];
    ASSERT_FALSE(answer.ok()) << "a part for an unknown round was served";
    if (answer.error_message().find("at their bound") != std::string::npos) {
      ++refused_at_bound;
    } else if (answer.error_code() == grpc::StatusCode::NOT_FOUND) {
      ++held;  // held, then refused when its round never came
    }
  }
  for (int i = kDataParts; i < kDataParts + kIdParts; ++i) {
    EXPECT_EQ(answers[i].error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << answers[i].error_message().substr(0, 200);
    EXPECT_LT(answers[i].error_message().size(), 1024u);
  }
  std::map<std::string, int> kinds;  // what came back, for a failure's message
  for (const grpc::Status& answer : answers) {
    ++kinds[absl::StrCat(answer.error_code(), " ", answer.error_message().substr(0, 120))];
  }
  std::string seen;
  for (const auto& [kind, n] : kinds) absl::StrAppend(&seen, n, " x ", kind, "\n");
  EXPECT_LE(held, 64) << "more than 64 MiB was held\n" << seen;
  EXPECT_GE(refused_at_bound, kDataParts - 64) << seen;
  EXPECT_GE(held, 1) << seen;
  std::cout << held << " parts held, " << refused_at_bound << " refused at the bound\n";

  ASSERT_NO_FATAL_FAILURE(ExpectCleanExits({{&a, "a"}, {&b, "b"}}, absl::Minutes(5)));
  auto ha = StepHashes(testing::ReadLog(dir_ + "/a.log"));
  EXPECT_EQ(ha, StepHashes(testing::ReadLog(dir_ + "/b.log")));
  ASSERT_FALSE(ha.empty());
  EXPECT_EQ(ha.rbegin()->first, 6);
}

}  // namespace
}  // namespace dd
