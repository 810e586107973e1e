// The dataset service over real loopback gRPC: every RPC, every documented
// error code, auth, TLS, resumable verified downloads, concurrent clients.
#include "services/dataset/dataset_service.h"

#include <filesystem>
#include <thread>

#include "common/rpc/channel.h"
#include "common/rpc/reflection_client.h"
#include "common/rpc/server.h"
#include "common/rpc/testing/test_certs.h"
#include "common/rpc/testing/test_run_credentials.h"
#include <grpcpp/create_channel.h>
#include "common/crypto/sha256.h"
#include "gtest/gtest.h"
#include "services/dataset/dataset_client.h"
#include "services/dataset/indexer.h"
#include "services/dataset/testing/test_dataset.h"

namespace dd::dataset {
namespace {

constexpr char kToken[] = "dataset-test-token-0123456789";

class DatasetServiceTest : public ::testing::Test {
 protected:
  void StartServer(SecurityConfig security, DatasetServiceOptions service_options = {}) {
    root_ = testing::NewTempDir("svc");
    for (int i = 0; i < 9; ++i) {
      testing::WritePair(root_ + "/d" + std::to_string(i % 3), "s" + std::to_string(i),
                         i % 2 ? "png" : "jpg", i);
    }
    testing::WriteTar(root_ + "/shard.tar", testing::ShardMembers(100, 4));
    auto m = BuildManifest({root_, "", 4});
    ASSERT_TRUE(m.ok()) << m.status();
    catalog_ = std::make_unique<DatasetCatalog>(std::move(*m), CatalogMetadata{"svc", ""}, 0);
    service_ = std::make_unique<DatasetService>(catalog_.get(), service_options);
    ServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.security = security;
    auto host = ServiceHost::Start(options, {service_.get()});
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
    host_->SetServing(true);
  }

  void TearDown() override {
    if (host_) host_->Shutdown(absl::Seconds(1));
  }

  std::shared_ptr<grpc::Channel> Channel(SecurityConfig security, const std::string& host = "127.0.0.1") {
    auto ch = MakeChannel(host + ":" + std::to_string(host_->port()), security);
    EXPECT_TRUE(ch.ok());
    return *ch;
  }

  static DatasetServiceOptions SmallFrames() {
    DatasetServiceOptions o;
    o.frame_bytes = 1024;
    return o;
  }

  static SecurityConfig Token(const std::string& t = kToken) {
    SecurityConfig c;
    c.auth_token = t;
    return c;
  }

  std::string root_;
  std::unique_ptr<DatasetCatalog> catalog_;
  std::unique_ptr<DatasetService> service_;
  std::unique_ptr<ServiceHost> host_;
};

TEST_F(DatasetServiceTest, InfoListAndVerifiedResumableDownloads) {
  StartServer(Token(), SmallFrames());
  DatasetClient client(Channel(Token()));
  auto info = client.GetInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->num_samples(), 13u);
  EXPECT_EQ(info->num_chunks(), 4u);  // 1 shard + 9 pairs in chunks of 4
  auto chunks = client.ListAllChunks();
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  ASSERT_EQ(chunks->size(), 4u);
  EXPECT_EQ((*chunks)[0].source(), "shard:shard.tar");
  std::string out = testing::NewTempDir("downloads");
  for (const auto& c : *chunks) {
    DownloadOptions options;
    options.interrupt_after_bytes = 2000;  // force several resumed attempts
    options.initial_backoff = absl::Milliseconds(1);
    options.max_attempts = 100;
    std::string path = out + "/" + std::to_string(c.chunk_id()) + ".tar";
    auto result = client.DownloadChunk(c, path, options);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_GT(result->attempts, 1);
    EXPECT_EQ(result->bytes_received, c.size_bytes());  // nothing fetched twice
    EXPECT_EQ(DigestToHex(Sha256Of(testing::ReadFile(path))), c.sha256_hex());
  }
}

TEST_F(DatasetServiceTest, DownloadContinuesAPartialFileFromAnEarlierRun) {
  StartServer(Token(), SmallFrames());
  DatasetClient client(Channel(Token()));
  auto chunks = client.ListAllChunks();
  ASSERT_TRUE(chunks.ok());
  const auto& c = (*chunks)[1];
  std::string path = testing::NewTempDir("partial") + "/c.tar";
  DownloadOptions once;
  once.interrupt_after_bytes = 3000;
  once.max_attempts = 1;
  EXPECT_FALSE(client.DownloadChunk(c, path, once).ok());  // leaves c.tar.partial
  auto result = client.DownloadChunk(c, path);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->resumed);
  EXPECT_EQ(result->bytes_received, c.size_bytes() - 3072);  // 3 frames were kept
  EXPECT_EQ(DigestToHex(Sha256Of(testing::ReadFile(path))), c.sha256_hex());
}

TEST_F(DatasetServiceTest, ErrorCodes) {
  StartServer(Token());
  auto stub = v1::Dataset::NewStub(Channel(Token()));
  auto read_status = [&](uint64_t id, uint64_t offset) {
    grpc::ClientContext ctx;
    v1::ReadChunkRequest req;
    req.set_chunk_id(id);
    req.set_offset(offset);
    auto reader = stub->ReadChunk(&ctx, req);
    v1::ChunkFrame f;
    while (reader->Read(&f)) {
    }
    return reader->Finish().error_code();
  };
  EXPECT_EQ(read_status(1000, 0), grpc::StatusCode::NOT_FOUND);
  uint64_t size = catalog_->manifest().chunks(1).size_bytes();
  EXPECT_EQ(read_status(1, size + 1), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(read_status(1, size), grpc::StatusCode::OK);
  {
    grpc::ClientContext ctx;
    v1::ListChunksRequest req;
    req.set_page_token("forged");
    v1::ListChunksResponse resp;
    EXPECT_EQ(stub->ListChunks(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  // A file changed since indexing: DATA_LOSS, and the client keeps nothing.
  testing::WriteFile(root_ + "/d0/s0.jpg", "tampered");
  EXPECT_EQ(read_status(1, 0), grpc::StatusCode::DATA_LOSS);
  DatasetClient client(Channel(Token()));
  auto chunks = client.ListAllChunks();
  std::string path = testing::NewTempDir("dl") + "/c1.tar";
  auto result = client.DownloadChunk((*chunks)[1], path);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(DatasetServiceTest, EveryCallNeedsTheToken) {
  StartServer(Token());
  for (const SecurityConfig& bad : {SecurityConfig{}, Token("wrong-token-0123456789abc")}) {
    DatasetClient client(Channel(bad));
    EXPECT_EQ(client.GetInfo().status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(client.ListAllChunks().status().code(), absl::StatusCode::kUnauthenticated);
    v1::ChunkInfo c;
    c.set_chunk_id(0);
    c.set_size_bytes(10);
    c.set_sha256_hex(std::string(64, '0'));
    std::string path = testing::NewTempDir("unauth") + "/x";
    EXPECT_EQ(client.DownloadChunk(c, path).status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(ListServicesByReflection(Channel(bad)).status().code(),
              absl::StatusCode::kUnauthenticated);
  }
  auto names = ListServicesByReflection(Channel(Token()));
  ASSERT_TRUE(names.ok());
  EXPECT_NE(std::find(names->begin(), names->end(), "distdiff.dataset.v1.Dataset"), names->end());
}

TEST_F(DatasetServiceTest, ServesOverTls) {
  auto certs = dd::testing::MakeTestCerts(testing::NewTempDir("certs"));
  ASSERT_TRUE(certs.ok()) << certs.status();
  SecurityConfig server = Token();
  server.tls_cert_file = certs->server_cert;
  server.tls_key_file = certs->server_key;
  StartServer(server);
  SecurityConfig client_config = Token();
  client_config.tls_ca_file = certs->ca_cert;
  DatasetClient client(Channel(client_config, "localhost"));
  auto chunks = client.ListAllChunks();
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  auto result = client.DownloadChunk((*chunks)[2], testing::NewTempDir("tls") + "/c.tar");
  EXPECT_TRUE(result.ok()) << result.status();
  client_config.auth_token = "wrong-token-0123456789abc";
  EXPECT_EQ(DatasetClient(Channel(client_config, "localhost")).GetInfo().status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(DatasetServiceTest, ManyConcurrentClientsAndABoundOnStreams) {
  StartServer(Token(), DatasetServiceOptions{2, 64, 4096});
  auto chunks = DatasetClient(Channel(Token())).ListAllChunks();
  ASSERT_TRUE(chunks.ok());
  std::string out = testing::NewTempDir("concurrent");
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      DatasetClient client(Channel(Token()));
      bool all = true;
      for (const auto& c : *chunks) {
        auto r = client.DownloadChunk(
            c, out + "/" + std::to_string(t) + "-" + std::to_string(c.chunk_id()) + ".tar");
        all &= r.ok();
      }
      ok += all;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 8);
  EXPECT_EQ(service_->active_reads(), 0);
}

TEST(DatasetServiceLimits, StreamsAboveTheLimitAreResourceExhausted) {
  std::string root = testing::NewTempDir("limit");
  testing::WritePair(root, "a", "jpg", 0);
  auto m = BuildManifest({root, "", 4});
  ASSERT_TRUE(m.ok());
  DatasetCatalog catalog(std::move(*m), {}, 0);
  DatasetService service(&catalog, DatasetServiceOptions{1, 0});
  ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.security.auth_token = kToken;
  auto host = ServiceHost::Start(options, {&service});
  ASSERT_TRUE(host.ok());
  SecurityConfig c;
  c.auth_token = kToken;
  DatasetClient client(*MakeChannel("127.0.0.1:" + std::to_string((*host)->port()), c));
  auto chunks = client.ListAllChunks();
  ASSERT_TRUE(chunks.ok());
  DownloadOptions once;
  once.max_attempts = 2;
  once.initial_backoff = absl::Milliseconds(1);
  auto r = client.DownloadChunk((*chunks)[0], root + "/x.tar", once);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);  // gave up retrying
  EXPECT_NE(r.status().message().find("concurrent chunk reads"), absl::string_view::npos);
  (*host)->Shutdown(absl::Seconds(1));
}

// A service over one chunk far larger than a stalled reader's flow-control
// window (its streams stay open), and a client that reads nothing: a small
// window and no BDP probing.
class StalledReaders {
 public:
  static std::unique_ptr<StalledReaders> Start(const std::string& name, DatasetServiceOptions o) {
    std::unique_ptr<StalledReaders> s(new StalledReaders());
    s->root = testing::NewTempDir(name);
    auto members = testing::ShardMembers(0, 1);
    members[1].second = std::string(4 << 20, 'c');
    testing::WriteTar(s->root + "/big.tar", members);
    auto m = BuildManifest({s->root, "", 4});
    EXPECT_TRUE(m.ok()) << m.status();
    s->catalog = std::make_unique<DatasetCatalog>(std::move(*m), CatalogMetadata{}, 0);
    o.frame_bytes = 64 << 10;
    s->service = std::make_unique<DatasetService>(s->catalog.get(), o);
    ServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.security = s->credentials.Server();
    auto host = ServiceHost::Start(options, {s->service.get()});
    EXPECT_TRUE(host.ok());
    s->host = std::move(*host);
    s->target = "127.0.0.1:" + std::to_string(s->host->port());
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 << 10);
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    s->stub = v1::Dataset::NewStub(grpc::CreateCustomChannel(s->target, grpc::InsecureChannelCredentials(), args));
    return s;
  }
  ~StalledReaders() { host->Shutdown(absl::Seconds(1)); }

  // Opens one more stream of chunk 0 and reads nothing from it.
  void Open() {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts.back()->AddMetadata("authorization", std::string("Bearer ") + kToken);
    v1::ReadChunkRequest req;
    req.set_chunk_id(0);
    streams.push_back(stub->ReadChunk(contexts.back().get(), req));
  }
  // Waits (up to 5 s) until the service holds `n` streams.
  int WaitForActive(int n) {
    for (int i = 0; i < 500 && service->active_reads() != n; ++i) absl::SleepFor(absl::Milliseconds(10));
    return service->active_reads();
  }

  std::string root, target;
  ::dd::testing::TestRunCredentials credentials{kToken};
  std::unique_ptr<DatasetCatalog> catalog;
  std::unique_ptr<DatasetService> service;
  std::unique_ptr<ServiceHost> host;
  std::unique_ptr<v1::Dataset::Stub> stub;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::ChunkFrame>>> streams;

 private:
  StalledReaders() = default;
};

// The attack: a token holder opens streams and never reads them, to hold
// every one of the service's slots. Each client holds at most its own.
TEST(DatasetServiceLimits, StalledReadersHoldOnlyTheirOwnClientsSlots) {
  DatasetServiceOptions o;
  o.max_reads_per_client = 2;
  auto s = StalledReaders::Start("stalled", o);
  s->Open();
  s->Open();
  ASSERT_EQ(s->WaitForActive(2), 2);
  // The same client's third stream is refused ...
  s->Open();
  v1::ChunkFrame frame;
  EXPECT_FALSE(s->streams.back()->Read(&frame));
  EXPECT_EQ(s->streams.back()->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // ... while another client (a peer, by its credential) downloads the chunk.
  DatasetClient peer(*MakeChannel(s->target, s->credentials.Peer("peer-1")));
  auto chunks = peer.ListAllChunks();
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  auto got = peer.DownloadChunk((*chunks)[0], s->root + "/got.tar");
  EXPECT_TRUE(got.ok()) << got.status();
  // Cancelling the stalled streams gives their slots back.
  for (size_t i = 0; i < 2; ++i) s->contexts[i]->TryCancel();
  EXPECT_EQ(s->WaitForActive(0), 0);
}

// A stalled reader does not keep even its own slots: after idle_timeout
// without taking a frame its streams are cancelled.
TEST(DatasetServiceLimits, StalledStreamsAreCancelledAfterTheIdleTimeout) {
  DatasetServiceOptions o;
  o.idle_timeout = absl::Milliseconds(600);
  auto s = StalledReaders::Start("idle", o);
  s->Open();
  ASSERT_EQ(s->WaitForActive(1), 1);
  // Nobody reads: the watchdog cancels the stream and its slot returns.
  EXPECT_EQ(s->WaitForActive(0), 0);
  EXPECT_EQ(s->service->read_stats().idle_cancelled, 1u);
}

}  // namespace
}  // namespace dd::dataset
