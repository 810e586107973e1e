// Hub downloads against a local mock of the Hub (tests/testing/mock_hub)
// serving the fixture model: the cache layout huggingface_hub uses, reuse,
// revisions, offline mode, auth failures, a gated repository, an
// interrupted transfer that resumes and a corrupt blob that is refused.
#include "trainer/model/hub_download.h"

#include <cstdlib>
#include <filesystem>

#include "absl/strings/match.h"
#include "common/io/file_util.h"
#include "gtest/gtest.h"
#include "tests/testing/mock_hub.h"

namespace dd::model {
namespace {

namespace fs = std::filesystem;
using dd::testing::MockHub;
using dd::testing::MockHubRepo;

constexpr char kWeights[] = "unet/diffusion_pytorch_model.safetensors";

std::string Fixture() {
  const char* dir = std::getenv("FIXTURES_DIR");
  EXPECT_NE(dir, nullptr) << "run through tests/run_all.sh (FIXTURES_DIR)";
  return std::string(dir == nullptr ? "" : dir) + "/tiny-sd1/model";
}

std::string Tmp(const std::string& name) {
  std::string d = std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
  fs::remove_all(d);
  return d;
}

std::unique_ptr<MockHub> StartHub(MockHubRepo repo = {}) {
  repo.folder = Fixture();
  auto hub = MockHub::Start(repo);
  EXPECT_TRUE(hub.ok()) << hub.status();
  return hub.ok() ? std::move(*hub) : nullptr;
}

HubOptions Options(const MockHub& hub, const std::string& cache, const std::string& token = "") {
  HubOptions o;
  o.endpoint = hub.endpoint();
  o.cache_dir = cache;
  o.token = token;
  o.timeout = absl::Seconds(30);
  return o;
}

TEST(HubDownload, ThePipelineLandsInHuggingfaceHubsCacheLayout) {
  auto hub = StartHub();
  ASSERT_NE(hub, nullptr);
  const std::string cache = Tmp("cache");
  auto snapshot = DownloadPipeline({"org/tiny-sd", "main"}, Options(*hub, cache));
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  const MockHubRepo repo;
  const fs::path repo_dir = fs::path(cache) / "models--org--tiny-sd";
  EXPECT_EQ(*snapshot, (repo_dir / "snapshots" / repo.revisions.at("main")).string());
  EXPECT_EQ(*ReadFileToString((repo_dir / "refs/main").string()), repo.revisions.at("main"));
  for (const char* f : {"model_index.json", "unet/config.json", kWeights, "tokenizer/vocab.json",
                        "tokenizer/merges.txt", "scheduler/scheduler_config.json", "text_encoder/model.safetensors",
                        "vae/diffusion_pytorch_model.safetensors"}) {
    const fs::path p = fs::path(*snapshot) / f;
    ASSERT_TRUE(fs::is_symlink(p)) << f;
    EXPECT_EQ(fs::read_symlink(p).string().rfind("../../", 0), 0u) << f;  // relative, into blobs/
    EXPECT_EQ(*ReadFileToString(p.string(), 1 << 30), *ReadFileToString(Fixture() + "/" + f, 1 << 30)) << f;
  }
  // LFS files are stored under their SHA-256.
  auto target = fs::read_symlink(fs::path(*snapshot) / kWeights).filename().string();
  EXPECT_EQ(target.size(), 64u);
  // A second call finds everything in the cache and downloads nothing.
  const int downloads = hub->downloads();
  ASSERT_TRUE(DownloadPipeline({"org/tiny-sd", "main"}, Options(*hub, cache)).ok());
  EXPECT_EQ(hub->downloads(), downloads);
}

TEST(HubDownload, RevisionsAndOfflineMode) {
  auto hub = StartHub();
  ASSERT_NE(hub, nullptr);
  const std::string cache = Tmp("cache-rev");
  HubOptions o = Options(*hub, cache);
  auto v1 = DownloadPipeline({"org/tiny-sd", "v1"}, o);
  ASSERT_TRUE(v1.ok()) << v1.status();
  const MockHubRepo repo;
  EXPECT_EQ(fs::path(*v1).filename().string(), repo.revisions.at("v1"));
  o.offline = true;
  auto cached = DownloadPipeline({"org/tiny-sd", "v1"}, o);
  ASSERT_TRUE(cached.ok()) << cached.status();
  EXPECT_EQ(*cached, *v1);
  EXPECT_EQ(DownloadPipeline({"org/tiny-sd", "main"}, o).status().code(), absl::StatusCode::kNotFound);
  o.offline = false;
  EXPECT_EQ(DownloadPipeline({"org/tiny-sd", "nope"}, o).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(DownloadPipeline({"org/other", "main"}, o).status().code(), absl::StatusCode::kNotFound);
}

TEST(HubDownload, PrivateAndGatedRepositories) {
  MockHubRepo repo;
  repo.token = "hf_reader";
  repo.gated_token = "hf_not_accepted";
  auto hub = StartHub(repo);
  ASSERT_NE(hub, nullptr);
  const std::string cache = Tmp("cache-auth");
  auto none = DownloadPipeline({"org/tiny-sd", "main"}, Options(*hub, cache));
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(none.status().message().find("HF_TOKEN"), std::string::npos) << none.status();
  EXPECT_EQ(DownloadPipeline({"org/tiny-sd", "main"}, Options(*hub, cache, "hf_wrong")).status().code(),
            absl::StatusCode::kUnauthenticated);
  auto gated = DownloadPipeline({"org/tiny-sd", "main"}, Options(*hub, cache, "hf_not_accepted"));
  EXPECT_EQ(gated.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(gated.status().message().find("GatedRepo"), std::string::npos) << gated.status();
  // With the token: the Hub's routes see it, the storage redirects do not
  // (the mock refuses a token there).
  auto ok = DownloadPipeline({"org/tiny-sd", "main"}, Options(*hub, cache, "hf_reader"));
  ASSERT_TRUE(ok.ok()) << ok.status();
}

TEST(HubDownload, AnInterruptedTransferResumes) {
  auto hub = StartHub();
  ASSERT_NE(hub, nullptr);
  const size_t size = fs::file_size(Fixture() + "/" + kWeights);
  hub->CutNextDownload(kWeights, size / 2);
  auto snapshot = DownloadPipeline({"org/tiny-sd", "main"}, Options(*hub, Tmp("cache-cut")));
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EXPECT_GE(hub->ranged_requests(), 1);
  EXPECT_EQ(*ReadFileToString(*snapshot + "/" + kWeights, 1 << 30),
            *ReadFileToString(Fixture() + "/" + kWeights, 1 << 30));
}

TEST(HubDownload, ACorruptBlobIsRefusedAndNotKept) {
  auto hub = StartHub();
  ASSERT_NE(hub, nullptr);
  hub->Corrupt(kWeights);
  const std::string cache = Tmp("cache-corrupt");
  auto snapshot = DownloadPipeline({"org/tiny-sd", "main"}, Options(*hub, cache));
  EXPECT_EQ(snapshot.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(snapshot.status().message().find("SHA-256"), std::string::npos) << snapshot.status();
  for (const auto& e : fs::directory_iterator(cache + "/models--org--tiny-sd/blobs")) {
    EXPECT_FALSE(absl::EndsWith(e.path().string(), ".incomplete")) << e.path();
    EXPECT_NE(e.file_size(), fs::file_size(Fixture() + "/" + kWeights)) << "the corrupt blob was kept";
  }
}

// A variant on request: name.fp16.safetensors instead of the plain
// weights, for the parts that have one.
TEST(HubDownload, AVariantReplacesThePlainWeightsWhereAPartHasIt) {
  const std::string folder = Tmp("variant-repo");
  fs::copy(Fixture(), folder, fs::copy_options::recursive);
  fs::copy_file(folder + "/" + kWeights, folder + "/unet/diffusion_pytorch_model.fp16.safetensors");
  MockHubRepo repo;
  repo.folder = folder;
  auto hub = MockHub::Start(repo);
  ASSERT_TRUE(hub.ok());
  HubOptions o = Options(**hub, Tmp("cache-variant"));
  o.variant = "fp16";
  auto snapshot = DownloadPipeline({"org/tiny-sd", "main"}, o);
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EXPECT_TRUE(fs::exists(*snapshot + "/unet/diffusion_pytorch_model.fp16.safetensors"));
  EXPECT_FALSE(fs::exists(*snapshot + "/" + kWeights));
  EXPECT_TRUE(fs::exists(*snapshot + "/vae/diffusion_pytorch_model.safetensors"));  // no variant there
  o.variant = "";
  auto plain = DownloadPipeline({"org/tiny-sd", "main"}, o);
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(fs::exists(*plain + "/" + kWeights));
}

TEST(HubDownload, ModelReferencesAndTheEnvironment) {
  auto r = ParseModelRef("runwayml/stable-diffusion-v1-5");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->repo, "runwayml/stable-diffusion-v1-5");
  EXPECT_EQ(r->revision, "main");
  r = ParseModelRef("org/name@fp16");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->revision, "fp16");
  for (const char* path : {"/models/sd", "./sd", "a/b/c", "org/..", "org/na me", "org/name@", "org/name@../x"}) {
    EXPECT_FALSE(ParseModelRef(path).has_value()) << path;
  }
  const std::string home = Tmp("hf-home");
  fs::create_directories(home);
  ASSERT_TRUE(WriteFileAtomically(home + "/token", "hf_from_login\n").ok());
  setenv("HF_HOME", home.c_str(), 1);
  setenv("HF_ENDPOINT", "http://hub.example/", 1);
  unsetenv("HF_TOKEN");
  unsetenv("HF_HUB_CACHE");
  auto o = HubOptionsFromEnvironment();
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->token, "hf_from_login");
  EXPECT_EQ(o->endpoint, "http://hub.example");
  EXPECT_EQ(o->cache_dir, home + "/hub");
  setenv("HF_TOKEN", "hf_env", 1);
  EXPECT_EQ(HubOptionsFromEnvironment()->token, "hf_env");
  EXPECT_EQ(HubOptionsFromEnvironment("/nonexistent/token").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace dd::model
