// The /metrics pages of real dataset_server and coordinator processes
// (--http_port): scraped over HTTP after known calls, parsed back with the
// strict parser of the exposition format, and checked against what those
// calls must have counted.
#include <httplib.h>

#include <cstdlib>
#include <filesystem>
#include <cstring>
#include <fstream>
#include <iterator>
#include <regex>
#include <set>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/metrics/testing/exposition_parser.h"
#include "common/rpc/channel.h"
#include "protos/coordinator.grpc.pb.h"
#include "protos/dataset.grpc.pb.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/test_servers.h"
#include "common/metrics/gpu_memory.h"
#include "trainer/training/step_metrics.h"

namespace dd {
namespace {

using metrics::testing::ParsedFamily;
using metrics::testing::ParseExposition;
using testing::RunfilePath;
using testing::Subprocess;

constexpr char kToken[] = "metrics-test-run-token-0123456789ab";

std::map<std::string, ParsedFamily> Scrape(int port) {
  httplib::Client client("127.0.0.1", port);
  auto res = client.Get("/metrics");
  EXPECT_TRUE(res);
  if (!res) return {};
  EXPECT_EQ(res->status, 200);
  auto parsed = ParseExposition(res->body);
  EXPECT_TRUE(parsed.ok()) << parsed.status() << "\n" << res->body;
  return parsed.ok() ? *parsed : std::map<std::string, ParsedFamily>{};
}

double Sample(const std::map<std::string, ParsedFamily>& page, const std::string& family,
              const std::string& series) {
  auto f = page.find(family);
  if (f == page.end()) {
    ADD_FAILURE() << "no family " << family;
    return -1;
  }
  auto s = f->second.samples.find(series);
  if (s == f->second.samples.end()) {
    std::string have;
    for (const auto& [k, v] : f->second.samples) have += "\n  " + k;
    ADD_FAILURE() << "no series " << series << "; the family has:" << have;
    return -1;
  }
  return s->second;
}

TEST(MetricsEndpointsTest, ServersCountWhatTheyServe) {
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/metrics";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/token") << kToken;
  std::ofstream(dir + "/run.json") << R"({"run_id": "metrics", "target_batch_size": 16})";
  ASSERT_TRUE(testing::MakeShapesDataset(dir, 64).ok());
  auto dataset = testing::StartDatasetServer(
      dir, {"--chunk_size=16", "--frame_kib=4", "--http_port=0", "--http_port_file=" + dir + "/ds_http"});
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  auto ds_http = testing::WaitForPortFile(dir + "/ds_http", absl::Seconds(60));
  auto coordinator = testing::StartCoordinator(
      dir, dataset->address, {"--http_port=0", "--http_port_file=" + dir + "/http"});
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  auto http = testing::WaitForPortFile(dir + "/http", absl::Seconds(60));
  ASSERT_TRUE(ds_http.ok() && http.ok()) << testing::ReadLog(dir + "/coordinator.log");
  SecurityConfig security;
  security.auth_token = kToken;
  // Two GetRunState calls at the coordinator.
  auto coordinator_stub = distdiff::coordinator::v1::Coordinator::NewStub(
      *MakeChannel(coordinator->address, security));
  for (int i = 0; i < 2; ++i) {
    auto ctx = MakeCallContext(absl::Seconds(10));
    distdiff::coordinator::v1::RunState state;
    ASSERT_TRUE(coordinator_stub->GetRunState(ctx.get(), {}, &state).ok());
  }
  // A call with a wrong token is refused before any handler (and not counted:
  // docs/operations.md says so).
  SecurityConfig wrong;
  wrong.auth_token = "not-the-token-not-the-token-0123456";
  auto wrong_stub = distdiff::coordinator::v1::Coordinator::NewStub(
      *MakeChannel(coordinator->address, wrong));
  {
    auto ctx = MakeCallContext(absl::Seconds(10));
    distdiff::coordinator::v1::RunState state;
    ASSERT_EQ(wrong_stub->GetRunState(ctx.get(), {}, &state).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  // One whole chunk read from the dataset service, in 4 KiB frames.
  auto dataset_stub = distdiff::dataset::v1::Dataset::NewStub(
      *MakeChannel(dataset->address, security));
  auto ctx = MakeCallContext(absl::Seconds(30));
  distdiff::dataset::v1::ReadChunkRequest read;
  read.set_chunk_id(0);
  auto reader = dataset_stub->ReadChunk(ctx.get(), read);
  distdiff::dataset::v1::ChunkFrame frame;
  uint64_t bytes = 0, frames = 0;
  while (reader->Read(&frame)) {
    bytes += frame.data().size();
    ++frames;
  }
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_GT(frames, 1u);

  const std::string run_state =
      "{grpc_code=\"OK\",grpc_method=\"GetRunState\",grpc_service=\"distdiff.coordinator.v1."
      "Coordinator\",grpc_type=\"unary\"}";
  auto page = Scrape(*http);
  EXPECT_EQ(Sample(page, "grpc_server_handled_total", "grpc_server_handled_total" + run_state), 2);
  EXPECT_EQ(Sample(page, "grpc_server_handling_seconds",
                   "grpc_server_handling_seconds_count{grpc_method=\"GetRunState\",grpc_service="
                   "\"distdiff.coordinator.v1.Coordinator\",grpc_type=\"unary\"}"),
            2);
  for (const auto& [series, value] : page.at("grpc_server_handled_total").samples) {
    EXPECT_EQ(series.find("Unauthenticated"), std::string::npos) << series;
  }
  EXPECT_EQ(Sample(page, "dd_coordinator_chunks", "dd_coordinator_chunks{state=\"pending\"}"), 4);
  EXPECT_EQ(Sample(page, "dd_coordinator_chunks", "dd_coordinator_chunks{state=\"leased\"}"), 0);
  EXPECT_EQ(Sample(page, "dd_coordinator_ledger_writable", "dd_coordinator_ledger_writable{}"),
            1);
  EXPECT_EQ(page.at("dd_coordinator_chunk_completions_total").type, "counter");
  EXPECT_GT(Sample(page, "process_resident_memory_bytes", "process_resident_memory_bytes{}"), 0);

  auto ds_page = Scrape(*ds_http);
  EXPECT_EQ(Sample(ds_page, "dd_dataset_served_bytes_total", "dd_dataset_served_bytes_total{}"),
            bytes);
  EXPECT_EQ(Sample(ds_page, "dd_dataset_read_streams_total",
                   "dd_dataset_read_streams_total{start=\"from_start\"}"),
            1);
  EXPECT_EQ(Sample(ds_page, "dd_dataset_read_streams", "dd_dataset_read_streams{}"), 0);
  EXPECT_EQ(Sample(ds_page, "dd_dataset_chunks", "dd_dataset_chunks{}"), 4);
  // Every metric docs/operations.md (tables, alert rules) and the Grafana
  // dashboard name is one the servers or a trainer export.
  std::set<std::string> exported;
  for (const auto* p : {&page, &ds_page}) {
    for (const auto& [name, family] : *p) exported.insert(name);
  }
  metrics::MetricsRegistry trainer;
  training::MakeStepMetricsSink(&trainer);
  // A trainer on a GPU machine also exports the driver's GPU memory (here
  // through a stand-in for NVML).
  ASSERT_TRUE(metrics::AddGpuMemoryMetrics(&trainer, RunfilePath("common/metrics/libfake_nvml.so")));
  auto trainer_page = ParseExposition(trainer.Render());
  ASSERT_TRUE(trainer_page.ok());
  for (const auto& [name, family] : *trainer_page) exported.insert(name);
  for (const char* doc : {"docs/operations.md", "docs/grafana/distributed-diffusion.json"}) {
    std::ifstream in(RunfilePath(doc));
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_FALSE(text.empty()) << doc;
    static const std::regex kName("\\b(dd_[a-z_]+|grpc_server_[a-z_]+|process_[a-z_]+)");
    int named = 0;
    for (std::sregex_iterator it(text.begin(), text.end(), kName), end; it != end; ++it) {
      std::string name = (*it)[1];
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        if (absl::EndsWith(name, suffix) && !exported.count(name)) {
          name = name.substr(0, name.size() - strlen(suffix));
        }
      }
      EXPECT_TRUE(exported.count(name)) << doc << " names " << name << ", which nothing exports";
      ++named;
    }
    EXPECT_GT(named, 10) << doc;
  }

  EXPECT_EQ(Sample(ds_page, "grpc_server_msg_sent_total",
                   "grpc_server_msg_sent_total{grpc_method=\"ReadChunk\",grpc_service=\"distdiff."
                   "dataset.v1.Dataset\",grpc_type=\"server_stream\"}"),
            frames);
}

TEST(MetricsEndpointsTest, AnOpenPageOnANonLoopbackAddressIsRefused) {
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/open";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/token") << kToken;
  ASSERT_TRUE(testing::MakeShapesDataset(dir, 4).ok());
  // Not StartDatasetServer: this one must exit, not listen.
  auto dataset = Subprocess::Start(
      {RunfilePath("services/dataset/dataset_server"), "--dataset_dir=" + dir + "/data",
       "--work_dir=" + dir + "/work", "--host=0.0.0.0", "--port=0",
       "--auth_token_file=" + dir + "/token", "--http_port=0"},
      dir + "/dataset.log");
  ASSERT_TRUE(dataset.ok());
  auto code = dataset->Wait(absl::Seconds(60));
  ASSERT_TRUE(code.ok()) << "the server kept running with an open /metrics on 0.0.0.0";
  EXPECT_NE(*code, 0);
  EXPECT_NE(testing::ReadLog(dir + "/dataset.log").find("viewer token"), std::string::npos)
      << testing::ReadLog(dir + "/dataset.log");
}

}  // namespace
}  // namespace dd
