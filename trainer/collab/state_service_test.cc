// The state service over real loopback gRPC: who may download, the wait for
// a snapshot that never comes, a donor that is not ahead, and the joiner's
// bound on what a donor announces.
#include "trainer/collab/state_service.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/crypto/sha256.h"
#include "common/rpc/channel.h"
#include "common/rpc/server.h"
#include "common/rpc/testing/test_run_credentials.h"
#include "gtest/gtest.h"

namespace dd::collab {
namespace {

constexpr char kToken[] = "state-service-test-token-0123456";

class StateServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    service_ = std::make_unique<StateService>(2, absl::Milliseconds(300), absl::Milliseconds(600));
    ServerOptions o;
    o.listen_address = "127.0.0.1:0";
    o.security = credentials_.Server();
    auto host = ServiceHost::Start(o, {service_.get()});
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
    host_->SetServing(true);
  }
  void TearDown() override { host_->Shutdown(absl::Seconds(1)); }

  std::shared_ptr<grpc::Channel> Channel(const SecurityConfig& security) {
    return *MakeChannel("127.0.0.1:" + std::to_string(host_->port()), security);
  }

  void PublishCurrent(uint64_t step, std::string bytes) {
    auto snapshot = std::make_shared<StateSnapshot>();
    snapshot->global_step = step;
    snapshot->bytes = std::move(bytes);
    snapshot->sha256 = DigestToHex(Sha256Of(snapshot->bytes));
    service_->Publish(snapshot, /*current=*/true);
  }

  testing::TestRunCredentials credentials_{kToken};
  std::unique_ptr<StateService> service_;
  std::unique_ptr<ServiceHost> host_;
};

TEST_F(StateServiceTest, APeerDownloadsTheRunTokenAloneDoesNot) {
  std::string bytes(3 << 20, 'x');  // three frames
  bytes[12345] = 'y';
  PublishCurrent(7, bytes);
  auto got = FetchState(Channel(credentials_.Peer("joiner")), absl::Seconds(20), 4 << 20);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->global_step, 7u);
  EXPECT_EQ(got->bytes, bytes);
  auto refused = FetchState(Channel(credentials_.RunTokenOnly()), absl::Seconds(20), 4 << 20);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied) << refused.status();
}

// A peer learns who is ahead from the donor's answer, not by downloading
// its whole state: at its next step boundary, a donor whose state is not
// newer says so and makes no snapshot; one that is ahead serves. A paused
// donor answers for its current snapshot at once.
TEST_F(StateServiceTest, ADonorNotAheadSaysSoWithoutASnapshot) {
  auto joiner = Channel(credentials_.Peer("joiner"));
  // The donor's training loop: at its boundary it says its step, then
  // publishes only if a download still wants a snapshot.
  auto boundary_at = [&](uint64_t step) {
    return std::thread([this, step] {
      while (!service_->SnapshotWanted()) absl::SleepFor(absl::Milliseconds(5));
      service_->AtStepBoundary(step);
      if (!service_->SnapshotWanted()) return;
      auto snapshot = std::make_shared<StateSnapshot>();
      snapshot->global_step = step;
      snapshot->bytes = absl::StrCat("state of step ", step);
      snapshot->sha256 = DigestToHex(Sha256Of(snapshot->bytes));
      service_->Publish(snapshot);
    });
  };
  std::thread loop = boundary_at(5);
  auto not_ahead = FetchState(joiner, absl::Seconds(20), 4 << 20, /*newer_than=*/5);
  loop.join();
  EXPECT_EQ(not_ahead.status().code(), absl::StatusCode::kFailedPrecondition) << not_ahead.status();
  EXPECT_NE(not_ahead.status().message().find("global step 5"), std::string::npos);
  EXPECT_FALSE(service_->SnapshotWanted()) << "a snapshot is still wanted";

  loop = boundary_at(6);
  auto got = FetchState(joiner, absl::Seconds(20), 4 << 20, /*newer_than=*/5);
  loop.join();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->global_step, 6u);
  EXPECT_EQ(got->bytes, "state of step 6");

  PublishCurrent(8, "state of step 8");
  const absl::Time start = absl::Now();
  EXPECT_EQ(FetchState(joiner, absl::Seconds(20), 4 << 20, 8).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(250)) << "it waited for a step boundary";
  got = FetchState(joiner, absl::Seconds(20), 4 << 20, 7);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->bytes, "state of step 8");
}

TEST_F(StateServiceTest, ADonorAnnouncingMoreThanTheModelCanHoldIsRefused) {
  PublishCurrent(3, std::string(2 << 20, 'z'));
  auto got = FetchState(Channel(credentials_.Peer("joiner")), absl::Seconds(20), 1 << 20);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kResourceExhausted) << got.status();
}

TEST_F(StateServiceTest, ADownloadWaitingForASnapshotThatNeverComesEndsUnavailable) {
  // Nothing is published: this peer "is not stepping".
  absl::Time start = absl::Now();
  auto got = FetchState(Channel(credentials_.Peer("joiner")), absl::Seconds(20), 1 << 20);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable) << got.status();
  // Well before the client's own 20 s: the service gave up after its wait
  // (FetchState retries UNAVAILABLE a few times).
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));
}

// Two joiners take a frame each and stall, holding both download slots; the
// service cancels them after the idle timeout, and a third downloads.
TEST_F(StateServiceTest, StalledDownloadsAreCancelledAndFreeTheirSlots) {
  std::string bytes(48 << 20, 's');  // more than the connection's flow-control windows
  PublishCurrent(5, bytes);
  struct Stalled {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReader<tv1::StateFrame>> reader;
  };
  std::vector<std::unique_ptr<Stalled>> stalled;
  for (int i = 0; i < 2; ++i) {
    auto s = std::make_unique<Stalled>();
    auto stub = tv1::PeerState::NewStub(Channel(credentials_.Peer("stalled-" + std::to_string(i))));
    s->reader = stub->DownloadState(&s->context, tv1::DownloadStateRequest());
    tv1::StateFrame frame;
    ASSERT_TRUE(s->reader->Read(&frame));  // the stream is up; nothing more is read
    stalled.push_back(std::move(s));
  }
  // Both slots are held now.
  auto refused = FetchState(Channel(credentials_.Peer("joiner")), absl::Seconds(20), 64 << 20);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  absl::SleepFor(absl::Milliseconds(1500));  // past the idle timeout and the expirer's tick
  auto got = FetchState(Channel(credentials_.Peer("joiner")), absl::Seconds(20), 64 << 20);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->bytes.size(), bytes.size());
  for (auto& s : stalled) s->context.TryCancel();
}

}  // namespace
}  // namespace dd::collab
