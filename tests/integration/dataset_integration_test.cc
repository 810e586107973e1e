// The dataset service as users run it: real processes, real files.
//
// A dataset of real JPEG and PNG files (and WebDataset shards) is generated
// by make_shapes_dataset; dataset_server runs as a child process on port 0;
// every chunk is downloaded and verified while the server is SIGKILLed and
// restarted mid-download; a symlink to a file outside the root is never
// served; the services are listed through reflection; SIGTERM drains.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/crypto/sha256.h"
#include "common/rpc/channel.h"
#include "common/rpc/health_client.h"
#include "common/rpc/reflection_client.h"
#include "gtest/gtest.h"
#include "services/dataset/dataset_client.h"
#include "tests/testing/subprocess.h"

namespace dd {
namespace {

using testing::RunfilePath;
using testing::Subprocess;

constexpr char kToken[] = "integration-token-0123456789abcdef";

class DatasetIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::string(std::getenv("TEST_TMPDIR")) + "/it";
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ + "/outside");
    data_ = dir_ + "/data";
    Run({RunfilePath("trainer/tools/make_shapes_dataset"), "--out_dir=" + data_,
         "--num_samples=120", "--width=96", "--height=96", "--image_format=mixed",
         "--subdirs=3"});
    Run({RunfilePath("trainer/tools/make_shapes_dataset"), "--out_dir=" + data_ + "/shards",
         "--num_samples=40", "--shard_size=20", "--seed=3"});
    // A symlink that leads out of the root, to bytes that must never leave.
    std::ofstream(dir_ + "/outside/secret.jpg") << "TOP-SECRET-BYTES";
    std::ofstream(dir_ + "/outside/secret.txt") << "secret caption";
    std::filesystem::create_symlink(dir_ + "/outside/secret.jpg", data_ + "/leak.jpg");
    std::filesystem::create_symlink(dir_ + "/outside/secret.txt", data_ + "/leak.txt");
    std::ofstream(dir_ + "/token") << kToken << "\n";
    security_.auth_token = kToken;
  }

  void Run(const std::vector<std::string>& argv) {
    auto p = Subprocess::Start(argv, dir_ + "/tools.log");
    ASSERT_TRUE(p.ok()) << p.status();
    auto code = p->Wait(absl::Seconds(60));
    ASSERT_TRUE(code.ok() && *code == 0) << testing::ReadLog(dir_ + "/tools.log");
  }

  // Starts the server on `port` (0 = any) and waits until it is SERVING.
  int StartServer(int port) {
    std::filesystem::remove(dir_ + "/port");
    auto p = Subprocess::Start(
        {RunfilePath("services/dataset/dataset_server"), "--dataset_dir=" + data_,
         "--work_dir=" + dir_ + "/work", "--host=127.0.0.1", absl::StrCat("--port=", port),
         "--port_file=" + dir_ + "/port", "--chunk_size=32", "--frame_kib=16",
         "--auth_token_file=" + dir_ + "/token"},
        dir_ + "/server.log");
    EXPECT_TRUE(p.ok()) << p.status();
    server_ = std::make_unique<Subprocess>(std::move(*p));
    auto bound = testing::WaitForPortFile(dir_ + "/port", absl::Seconds(60));
    EXPECT_TRUE(bound.ok()) << testing::ReadLog(dir_ + "/server.log");
    address_ = absl::StrCat("127.0.0.1:", *bound);
    auto channel = *MakeChannel(address_, SecurityConfig{});
    for (int i = 0; i < 200; ++i) {
      auto serving = CheckHealth(channel, "", absl::Seconds(1));
      if (serving.ok() && *serving) return *bound;
      absl::SleepFor(absl::Milliseconds(25));
    }
    ADD_FAILURE() << "server never became SERVING: " << testing::ReadLog(dir_ + "/server.log");
    return *bound;
  }

  std::string dir_, data_, address_;
  SecurityConfig security_;
  std::unique_ptr<Subprocess> server_;
};

TEST_F(DatasetIntegrationTest, DownloadsEveryChunkThroughAServerCrash) {
  int port = StartServer(0);
  auto channel = *MakeChannel(address_, security_);

  // Inspectable through reflection (what grpcurl uses), behind the token.
  auto services = ListServicesByReflection(channel);
  ASSERT_TRUE(services.ok()) << services.status();
  for (const char* name : {"distdiff.dataset.v1.Dataset", "grpc.health.v1.Health",
                           "grpc.reflection.v1alpha.ServerReflection"}) {
    EXPECT_NE(std::find(services->begin(), services->end(), name), services->end()) << name;
  }
  EXPECT_EQ(ListServicesByReflection(*MakeChannel(address_, SecurityConfig{})).status().code(),
            absl::StatusCode::kUnauthenticated);

  dataset::DatasetClient client(channel);
  auto info = client.GetInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->num_samples(), 160u);
  bool leak_reported = false;
  for (const auto& s : info->skipped_files()) leak_reported |= s.path() == "leak.jpg";
  EXPECT_TRUE(leak_reported);

  auto chunks = client.ListAllChunks();
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  ASSERT_EQ(chunks->size(), 2u + 4u);  // two shards unchanged + 120 pairs / 32
  std::string out = dir_ + "/out";
  std::filesystem::create_directories(out);

  // Chunk 2 (repacked files) is interrupted by a SIGKILL of the server a third
  // of the way in; the server is restarted on the same port and the client
  // resumes from the bytes it holds.
  std::atomic<bool> killed{false};
  for (const auto& c : *chunks) {
    dataset::DownloadOptions options;
    options.initial_backoff = absl::Milliseconds(50);
    options.max_attempts = 50;
    if (c.chunk_id() == 2) {
      // The frames after the kill may already sit in the client's flow-
      // control window and finish the stream; ending the attempt at half
      // makes sure the rest comes from the restarted server.
      options.interrupt_after_bytes = c.size_bytes() / 2;
      options.on_progress = [&](uint64_t have, uint64_t total) {
        if (!killed && have > total / 3) {
          killed = true;
          server_->Signal(SIGKILL);
          ASSERT_TRUE(server_->Wait(absl::Seconds(10)).ok());
          StartServer(port);
        }
      };
    }
    std::string path = absl::StrCat(out, "/chunk-", c.chunk_id(), ".tar");
    auto result = client.DownloadChunk(c, path, options);
    ASSERT_TRUE(result.ok()) << "chunk " << c.chunk_id() << ": " << result.status();
    EXPECT_EQ(DigestToHex(Sha256Of(testing::ReadLog(path))), c.sha256_hex());
    EXPECT_EQ(testing::ReadLog(path).find("TOP-SECRET-BYTES"), std::string::npos);
    if (c.chunk_id() == 2) {
      EXPECT_GT(result->attempts, 1);
      EXPECT_LT(result->bytes_received, c.size_bytes() + c.size_bytes() / 2);
    }
  }
  EXPECT_TRUE(killed.load());
  // The restarted server reused its manifest instead of re-indexing.
  EXPECT_TRUE(absl::StrContains(testing::ReadLog(dir_ + "/server.log"), "reusing manifest"));
  // GNU tar reads a chunk: WebDataset keys with image + caption members.
  ASSERT_EQ(std::system(("tar tf " + out + "/chunk-2.tar > " + out + "/list").c_str()), 0);
  std::string listing = testing::ReadLog(out + "/list");
  EXPECT_TRUE(absl::StrContains(listing, ".txt\n")) << listing;
  EXPECT_TRUE(absl::StrContains(listing, ".jpg\n") || absl::StrContains(listing, ".png\n"));

  // SIGTERM: drain and exit 0.
  server_->Signal(SIGTERM);
  auto code = server_->Wait(absl::Seconds(40));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << testing::ReadLog(dir_ + "/server.log");
}

TEST_F(DatasetIntegrationTest, RefusesToStartWithoutAToken) {
  std::filesystem::create_directories(dir_ + "/work2");
  auto p = Subprocess::Start({RunfilePath("services/dataset/dataset_server"),
                              "--dataset_dir=" + data_, "--work_dir=" + dir_ + "/work2",
                              "--port=0"},
                             dir_ + "/notoken.log");
  ASSERT_TRUE(p.ok());
  auto code = p->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 1);
  EXPECT_TRUE(absl::StrContains(testing::ReadLog(dir_ + "/notoken.log"), "no auth token"));
}

}  // namespace
}  // namespace dd
