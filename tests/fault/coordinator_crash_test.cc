// Crash test with real processes: a coordinator under concurrent clients
// acquiring and completing chunks is killed with SIGKILL at random moments
// and restarted on the same ledger. At the end every chunk has been completed
// exactly once per epoch, every acknowledged completion is in the ledger, and
// no lease is held by a peer that is not live.
#include <signal.h>

#include <type_traits>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/rpc/auth.h"
#include "common/rpc/channel.h"
#include "common/rpc/health_client.h"
#include "gtest/gtest.h"
#include "protos/coordinator.grpc.pb.h"
#include "trainer/collab/coordinator_client.h"
#include "tests/testing/subprocess.h"

namespace dd {
namespace {

namespace v1 = distdiff::coordinator::v1;
using testing::RunfilePath;
using testing::Subprocess;

constexpr char kToken[] = "crash-test-token-0123456789abcdef";
constexpr uint64_t kTargetEpoch = 12;

bool Transient(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::DEADLINE_EXCEEDED ||
         code == grpc::StatusCode::CANCELLED || code == grpc::StatusCode::UNKNOWN;
}

class CoordinatorCrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::string(std::getenv("TEST_TMPDIR")) + "/crash";
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ + "/token") << kToken;
    std::ofstream(dir_ + "/run.json") << R"({"run_id": "crash-test", "model": "tiny"})";
    auto gen = Subprocess::Start({RunfilePath("trainer/tools/make_shapes_dataset"),
                                  "--out_dir=" + dir_ + "/data", "--num_samples=120",
                                  "--width=16", "--height=16"},
                                 dir_ + "/gen.log");
    ASSERT_TRUE(gen.ok() && *gen->Wait(absl::Seconds(60)) == 0);
    auto ds = Subprocess::Start(
        {RunfilePath("services/dataset/dataset_server"), "--dataset_dir=" + dir_ + "/data",
         "--work_dir=" + dir_ + "/dswork", "--host=127.0.0.1", "--port=0",
         "--port_file=" + dir_ + "/ds_port", "--chunk_size=4", "--auth_token_file=" + dir_ + "/token"},
        dir_ + "/dataset.log");
    ASSERT_TRUE(ds.ok());
    dataset_ = std::make_unique<Subprocess>(std::move(*ds));
    auto port = testing::WaitForPortFile(dir_ + "/ds_port", absl::Seconds(60));
    ASSERT_TRUE(port.ok());
    dataset_address_ = absl::StrCat("127.0.0.1:", *port);
  }

  int StartCoordinator(int port) {
    std::filesystem::remove(dir_ + "/port");
    auto p = Subprocess::Start(
        {RunfilePath("services/coordinator/coordinator"), "--config=" + dir_ + "/run.json",
         "--db_dir=" + dir_ + "/ledger", "--dataset_address=" + dataset_address_,
         "--host=127.0.0.1", absl::StrCat("--port=", port), "--port_file=" + dir_ + "/port",
         "--task_timeout=10s", "--heartbeat_ttl=60s", "--auth_token_file=" + dir_ + "/token"},
        dir_ + "/coordinator.log");
    EXPECT_TRUE(p.ok());
    coordinator_ = std::make_unique<Subprocess>(std::move(*p));
    auto bound = testing::WaitForPortFile(dir_ + "/port", absl::Seconds(60));
    EXPECT_TRUE(bound.ok()) << testing::ReadLog(dir_ + "/coordinator.log");
    return *bound;
  }

  std::string dir_, dataset_address_;
  std::unique_ptr<Subprocess> dataset_, coordinator_;
};

struct Ledgerbook {
  absl::Mutex mu;
  std::set<std::pair<uint64_t, uint64_t>> acked;  // (chunk, lease) completions acknowledged
  int ambiguous = 0;  // a retried completion that ended FAILED_PRECONDITION
};

TEST_F(CoordinatorCrashTest, KilledAndRestartedCoordinatorLosesNothingAndCountsNothingTwice) {
  int port = StartCoordinator(0);
  std::string address = absl::StrCat("127.0.0.1:", port);
  SecurityConfig security;
  security.auth_token = kToken;
  Ledgerbook book;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> epoch{0};
  std::atomic<int> acquires_retried{0};
  std::vector<v1::PeerRef> peers(4);
  std::vector<std::string> credentials(4);
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      auto stub = v1::Coordinator::NewStub(*MakeChannel(address, security));
      // Every call waits for the coordinator to come back (wait_for_ready).
      auto call = [&](auto method, const auto& request, auto* response) {
        while (true) {
          auto ctx = MakeCallContext(absl::Seconds(5), /*wait_for_ready=*/true);
          grpc::Status s = ((*stub).*method)(ctx.get(), request, response);
          if (!Transient(s.error_code()) || stop) return s;
          if constexpr (std::is_same_v<std::decay_t<decltype(request)>, v1::AcquireChunksRequest>) {
            ++acquires_retried;  // the lost attempt may hold leases nobody knows of
          }
          absl::SleepFor(absl::Milliseconds(20));
        }
      };
      v1::JoinRequest join;
      join.set_client_only(true);
      join.set_display_name(absl::StrCat("client-", t));
      v1::JoinResponse joined;
      ASSERT_TRUE(call(&v1::Coordinator::Stub::Join, join, &joined).ok());
      v1::PeerRef& me = peers[t];
      me.set_peer_id(joined.peer_id());
      me.set_incarnation(joined.incarnation());
      // From now on the client acts with its credential, which stays valid
      // across the coordinator's restarts (its key lives beside the ledger).
      ASSERT_FALSE(joined.peer_token().empty());
      credentials[t] = joined.peer_token();
      SecurityConfig as_peer = security;
      as_peer.call_token = std::make_shared<CallToken>(kToken);
      as_peer.call_token->SetPeerCredential(joined.peer_token());
      stub = v1::Coordinator::NewStub(*MakeChannel(address, as_peer));
      while (!stop) {
        v1::AcquireChunksRequest acquire;
        *acquire.mutable_peer() = me;
        acquire.set_max_chunks(2);
        v1::AcquireChunksResponse leases;
        grpc::Status s = call(&v1::Coordinator::Stub::AcquireChunks, acquire, &leases);
        if (stop) break;
        ASSERT_TRUE(s.ok()) << s.error_message();
        for (const auto& lease : leases.leases()) {
          absl::SleepFor(absl::Milliseconds(15));  // "training" the chunk
          v1::CompleteChunkRequest complete;
          *complete.mutable_peer() = me;
          complete.set_chunk_id(lease.chunk_id());
          complete.set_lease_id(lease.lease_id());
          complete.set_samples_trained(lease.num_samples());
          bool retried = false;
          while (true) {
            auto ctx = MakeCallContext(absl::Seconds(5), true);
            v1::CompleteChunkResponse done;
            grpc::Status cs = stub->CompleteChunk(ctx.get(), complete, &done);
            if (cs.ok()) {
              absl::MutexLock lock(&book.mu);
              book.acked.insert({lease.chunk_id(), lease.lease_id()});
              break;
            }
            if (Transient(cs.error_code())) {
              retried = true;
              if (stop) break;
              absl::SleepFor(absl::Milliseconds(20));
              continue;
            }
            ASSERT_EQ(cs.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << cs.error_message();
            absl::MutexLock lock(&book.mu);
            if (retried) book.ambiguous++;  // outcome of the lost attempt unknown
            break;
          }
        }
        if (leases.leases_size() == 0) absl::SleepFor(absl::Milliseconds(10));
        v1::RunState state;
        if (call(&v1::Coordinator::Stub::GetRunState, v1::GetRunStateRequest(), &state).ok()) {
          epoch = std::max<uint64_t>(epoch.load(), state.epoch());
          if (state.epoch() >= kTargetEpoch) stop = true;
        }
      }
    });
  }

  // Kill the coordinator at random moments while the clients work.
  std::mt19937 rng(7);
  int kills = 0;
  for (; kills < 8 && !stop; ++kills) {
    absl::SleepFor(absl::Milliseconds(200 + rng() % 500));
    coordinator_->Signal(SIGKILL);
    ASSERT_TRUE(coordinator_->Wait(absl::Seconds(10)).ok());
    StartCoordinator(port);
  }
  absl::Time deadline = absl::Now() + absl::Seconds(240);
  while (!stop && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(50));
  stop = true;
  for (auto& c : clients) c.join();
  ASSERT_GE(epoch.load(), kTargetEpoch) << "the run did not reach epoch " << kTargetEpoch;
  EXPECT_GE(kills, 3);

  // Verify the final ledger through the API.
  auto stub = v1::Coordinator::NewStub(*MakeChannel(address, security));
  v1::ListChunksRequest list;
  list.set_page_size(10000);
  v1::ListChunksResponse chunks;
  {
    auto ctx = MakeCallContext(absl::Seconds(10), true);
    ASSERT_TRUE(stub->ListChunks(ctx.get(), list, &chunks).ok());
  }
  v1::ListPeersResponse live;
  {
    auto ctx = MakeCallContext(absl::Seconds(10), true);
    ASSERT_TRUE(stub->ListPeers(ctx.get(), {}, &live).ok());
  }
  std::set<std::string> live_ids;
  for (const auto& p : live.peers()) live_ids.insert(p.peer_id());
  uint64_t total = 0, min_times = UINT64_MAX, max_times = 0, samples = 0;
  std::map<uint64_t, int> acked_per_chunk;
  for (const auto& [chunk, lease] : book.acked) acked_per_chunk[chunk]++;
  for (const auto& c : chunks.chunks()) {
    total += c.times_trained();
    samples += c.samples_trained();
    min_times = std::min(min_times, c.times_trained());
    max_times = std::max(max_times, c.times_trained());
    EXPECT_EQ(c.samples_trained(), c.times_trained() * c.num_samples()) << c.chunk_id();
    EXPECT_GE(c.times_trained(), static_cast<uint64_t>(acked_per_chunk[c.chunk_id()]))
        << "an acknowledged completion of chunk " << c.chunk_id() << " is missing";
    if (c.state() == v1::LEASED) {
      EXPECT_TRUE(live_ids.count(c.owner_peer_id())) << "lease held by a non-live peer";
    }
  }
  EXPECT_EQ(chunks.chunks_size(), 30);
  EXPECT_GE(min_times, kTargetEpoch);
  // Least-trained-first, unless an AcquireChunks reply was lost in a crash:
  // its leases are held by nobody until they expire (--task_timeout), and
  // meanwhile the other chunks go on being trained.
  if (acquires_retried == 0) {
    EXPECT_LE(max_times - min_times, 1u) << "least-trained-first was violated";
  }
  // Every completion in the ledger was acknowledged, except at most those
  // whose reply was lost in a crash and whose retry found the lease gone.
  EXPECT_GE(total, book.acked.size());
  EXPECT_LE(total, book.acked.size() + book.ambiguous);
  LOG(INFO) << "kills=" << kills << " completions=" << total << " acked=" << book.acked.size()
            << " ambiguous=" << book.ambiguous;

  // Clean leaves release everything; each peer leaves with its own
  // credential (the run token acts for no peer).
  for (size_t t = 0; t < peers.size(); ++t) {
    SecurityConfig as_peer = security;
    as_peer.call_token = std::make_shared<CallToken>(kToken);
    as_peer.call_token->SetPeerCredential(credentials[t]);
    auto peer_stub = v1::Coordinator::NewStub(*MakeChannel(address, as_peer));
    auto ctx = MakeCallContext(absl::Seconds(10), true);
    v1::LeaveRequest leave;
    *leave.mutable_peer() = peers[t];
    v1::LeaveResponse r;
    grpc::Status left = peer_stub->Leave(ctx.get(), leave, &r);
    EXPECT_TRUE(left.ok()) << left.error_message();
  }
  v1::RunState state;
  auto ctx = MakeCallContext(absl::Seconds(10), true);
  ASSERT_TRUE(stub->GetRunState(ctx.get(), {}, &state).ok());
  EXPECT_EQ(state.chunks_leased(), 0u);
  EXPECT_EQ(state.live_peers(), 0u);
  EXPECT_EQ(state.completions(), total);
}

// A trainer completes a chunk while the coordinator is down (killed, and
// restarted by its supervisor a moment later): the completion waits and
// goes through instead of being lost (which left the chunk leased and
// counted untrained; seen in tests/deploy/compose_test.sh).
TEST_F(CoordinatorCrashTest, ATrainersCompletionDuringARestartIsNotLost) {
  int port = StartCoordinator(0);
  const std::string address = absl::StrCat("127.0.0.1:", port);
  SecurityConfig security;
  security.auth_token = kToken;
  security.call_token = std::make_shared<CallToken>(kToken);
  collab::CoordinatorClient client(*MakeChannel(address, security), security.call_token);
  collab::JoinOptions join;
  join.client_only = true;
  ASSERT_TRUE(client.Join(join, absl::Seconds(30)).ok());
  auto leases = client.Acquire(1);
  ASSERT_TRUE(leases.ok() && leases->size() == 1) << leases.status();
  const v1::Lease lease = (*leases)[0];

  coordinator_->Signal(SIGKILL);
  ASSERT_TRUE(coordinator_->Wait(absl::Seconds(10)).ok());
  absl::StatusOr<v1::CompleteChunkResponse> done;
  std::thread trainer(
      [&] { done = client.Complete(lease.chunk_id(), lease.lease_id(), lease.num_samples()); });
  absl::SleepFor(absl::Seconds(2));  // the completion is sent to nobody
  StartCoordinator(port);
  trainer.join();
  ASSERT_TRUE(done.ok()) << done.status();
  // The restarted ledger counts it.
  auto stub = v1::Coordinator::NewStub(*MakeChannel(address, security));
  v1::RunState state;
  auto ctx = MakeCallContext(absl::Seconds(10), true);
  ASSERT_TRUE(stub->GetRunState(ctx.get(), v1::GetRunStateRequest(), &state).ok());
  EXPECT_EQ(state.completions(), 1u);
  EXPECT_EQ(state.samples_done(), lease.num_samples());
}

}  // namespace
}  // namespace dd
