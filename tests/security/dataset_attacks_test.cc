// Attacks on the dataset service by a token holder, against real dataset
// and coordinator processes over real gRPC: the attacker's move, then a
// check that it failed and that an honest peer still downloads.
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/create_channel.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/rpc/auth.h"
#include "common/rpc/channel.h"
#include "gtest/gtest.h"
#include "protos/coordinator.grpc.pb.h"
#include "protos/dataset.grpc.pb.h"
#include "services/dataset/dataset_client.h"
#include "services/dataset/testing/test_dataset.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/test_servers.h"

namespace dd {
namespace {

using testing::Subprocess;
namespace cv1 = ::distdiff::coordinator::v1;
namespace dv1 = ::distdiff::dataset::v1;

constexpr char kToken[] = "security-test-run-token-0123456789";
constexpr int kIdleTimeoutS = 4;

class DatasetAttacks : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::string(std::getenv("TEST_TMPDIR")) + "/dataset-attacks";
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ + "/token") << kToken;
    std::ofstream(dir_ + "/run.json") << R"({"run_id": "attacks", "target_batch_size": 16})";
    ASSERT_TRUE(testing::MakeShapesDataset(dir_, 32).ok());
    // One shard whose only sample is far larger than a stalled reader's
    // flow-control window, so its streams stay open.
    auto members = dataset::testing::ShardMembers(1000, 1);
    members[1].second = std::string(4 << 20, 'c');
    dataset::testing::WriteTar(dir_ + "/data/big.tar", members);
    // The service's defaults: 64 streams in all, 16 per client.
    auto ds = testing::StartDatasetServer(
        dir_, {"--chunk_size=8", "--frame_kib=64", absl::StrCat("--read_idle_timeout_s=", kIdleTimeoutS),
               "--peer_public_key_file=" + dir_ + "/credential.pub"});
    ASSERT_TRUE(ds.ok()) << ds.status();
    dataset_ = std::make_unique<Subprocess>(std::move(ds->process));
    dataset_address_ = ds->address;
    auto co = testing::StartCoordinator(dir_, ds->address,
                                        {"--credential_public_key_out=" + dir_ + "/credential.pub"});
    ASSERT_TRUE(co.ok()) << co.status();
    coordinator_ = std::make_unique<Subprocess>(std::move(co->process));
    coordinator_address_ = co->address;
  }

  // An honest peer's channel to the dataset service: it joined the run and
  // reads with its own credential.
  std::shared_ptr<grpc::Channel> HonestPeerChannel() {
    SecurityConfig run;
    run.auth_token = kToken;
    run.call_token = std::make_shared<CallToken>(kToken);
    auto coordinator = cv1::Coordinator::NewStub(*MakeChannel(coordinator_address_, run));
    cv1::JoinRequest req;
    req.set_listen_address("127.0.0.1:1");
    cv1::JoinResponse resp;
    auto ctx = MakeCallContext(absl::Seconds(30), true);
    grpc::Status s = coordinator->Join(ctx.get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    SecurityConfig peer = run;
    peer.call_token = std::make_shared<CallToken>(kToken);
    peer.call_token->SetPeerCredential(resp.peer_token());
    return *MakeChannel(dataset_address_, peer);
  }

  std::string dir_, dataset_address_, coordinator_address_;
  std::unique_ptr<Subprocess> dataset_, coordinator_;
};

// The attack: a run token holder opens 64 streams of the big chunk (the
// service's every slot) and never reads them. It holds only its own
// client's 16; an honest peer downloads every other chunk meanwhile; and
// after the idle timeout the service cancels the stalled streams.
TEST_F(DatasetAttacks, SixtyFourStalledReadersHoldOnlyTheirOwnSlots) {
  dataset::DatasetClient honest(HonestPeerChannel());
  // The service learns the coordinator's credential key once the
  // coordinator has written it (it polls for the file).
  auto chunks = honest.ListAllChunks();
  for (int i = 0; i < 100 && chunks.status().code() == absl::StatusCode::kUnavailable; ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    chunks = honest.ListAllChunks();
  }
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  dv1::ChunkInfo big;
  for (const auto& c : *chunks) {
    if (c.size_bytes() > (4 << 20)) big = c;
  }
  ASSERT_GT(big.size_bytes(), 0u) << "no chunk holds the big shard";

  // The attacker reads nothing: a small window and no BDP probing, so the
  // service's writes stop once the window is full.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 << 10);
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  auto stub = dv1::Dataset::NewStub(
      grpc::CreateCustomChannel(dataset_address_, grpc::InsecureChannelCredentials(), args));
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<dv1::ChunkFrame>>> streams;
  for (int i = 0; i < 64; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts.back()->AddMetadata("authorization", std::string("Bearer ") + kToken);
    dv1::ReadChunkRequest req;
    req.set_chunk_id(big.chunk_id());
    streams.push_back(stub->ReadChunk(contexts.back().get(), req));
  }
  // One frame from each tells which the service took: 16, the client's cap.
  std::vector<size_t> held;
  int refused = 0;
  for (size_t i = 0; i < streams.size(); ++i) {
    dv1::ChunkFrame frame;
    if (streams[i]->Read(&frame)) {
      held.push_back(i);
    } else {
      grpc::Status s = streams[i]->Finish();
      EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
      ++refused;
    }
  }
  EXPECT_EQ(held.size(), 16u);
  EXPECT_EQ(refused, 48);

  // Meanwhile an honest peer downloads every chunk but the big one.
  int downloaded = 0;
  for (const auto& c : *chunks) {
    if (c.chunk_id() == big.chunk_id()) continue;
    auto got = honest.DownloadChunk(c, absl::StrCat(dir_, "/got-", c.chunk_id(), ".tar"));
    EXPECT_TRUE(got.ok()) << got.status();
    downloaded += got.ok();
  }
  EXPECT_GE(downloaded, 4);

  // The held streams stall past the idle timeout: the service cancels them
  // (the frames already in flight arrive, then the stream ends, unfinished).
  absl::SleepFor(absl::Seconds(kIdleTimeoutS + 2));
  for (size_t i : held) {
    dv1::ChunkFrame frame;
    uint64_t bytes = 0;
    while (streams[i]->Read(&frame)) bytes += frame.data().size();
    grpc::Status s = streams[i]->Finish();
    EXPECT_FALSE(s.ok()) << "stream " << i << " was served in full after stalling (" << bytes << " bytes)";
  }
  // And the slots are free again: the honest peer reads the big chunk too.
  auto got = honest.DownloadChunk(big, dir_ + "/got-big.tar");
  EXPECT_TRUE(got.ok()) << got.status();
}

}  // namespace
}  // namespace dd
