#include "trainer/data/sample_source.h"

#include <filesystem>
#include <fstream>

#include "common/tar/tar_format.h"
#include "gtest/gtest.h"

namespace dd::data {
namespace {

namespace fs = std::filesystem;

std::string TempDir(const std::string& name) {
  std::string d = std::string(getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/tmp") + "/" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void Write(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string Tar(const std::vector<std::pair<std::string, std::string>>& members) {
  std::string out;
  for (const auto& [name, data] : members) {
    out += *tar::MakeFileHeader(name, data.size());
    out += data;
    out += std::string(tar::PaddingFor(data.size()), '\0');
  }
  out += std::string(tar::kTrailerSize, '\0');
  return out;
}

TEST(SampleSource, FolderPairsAndShards) {
  std::string d = TempDir("source");
  Write(d + "/a.jpg", "JPEGA");
  Write(d + "/a.txt", "caption a");
  Write(d + "/sub/b.PNG", "PNGB");
  Write(d + "/orphan.txt", "no image");
  Write(d + "/readme.md", "ignored");
  Write(d + "/shards/000.tar",
        Tar({{"x/0001.jpg", "J1"}, {"x/0001.txt", "one"}, {"x/0002.webp", "W2"},
             {"x/0003.json", "{}"}}));
  Write(d + "/broken.tar", "not a tar at all, far too short");
  auto listing = ListSamples(d);
  ASSERT_TRUE(listing.ok()) << listing.status();
  std::vector<std::string> keys;
  for (const auto& s : listing->samples) keys.push_back(s.key);
  EXPECT_EQ(keys, (std::vector<std::string>{"a", "shards/000.tar:x/0001", "shards/000.tar:x/0002",
                                            "sub/b"}));
  EXPECT_EQ(listing->without_caption, 2);
  EXPECT_EQ(listing->skipped_files, 3);  // orphan caption, broken tar, json-only key
  const SampleRef& shard = listing->samples[1];
  EXPECT_EQ(*ReadRange(shard.image), "J1");
  EXPECT_EQ(*ReadRange(shard.caption), "one");
  EXPECT_EQ(*ReadRange(listing->samples[0].caption), "caption a");
  // A single tar file (a downloaded chunk) is a source too.
  auto one = ListSamples(d + "/shards/000.tar");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->samples.size(), 2u);
}

TEST(SampleSource, Errors) {
  EXPECT_EQ(ListSamples("/nonexistent/dir").status().code(), absl::StatusCode::kNotFound);
  std::string d = TempDir("empty_source");
  Write(d + "/only.txt", "x");
  EXPECT_EQ(ListSamples(d).status().code(), absl::StatusCode::kFailedPrecondition);
  Write(d + "/short.jpg", "abc");
  FileRange past{d + "/short.jpg", 0, 10};
  EXPECT_EQ(ReadRange(past).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ReadRange(past, 5).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(SampleSource, CleanCaption) {
  EXPECT_EQ(CleanCaption("  a cat\n"), "a cat");
  EXPECT_EQ(CleanCaption("caf\xC3\xA9"), "caf\xC3\xA9");
  EXPECT_EQ(CleanCaption("bad \xFF\xFE byte"), "bad \xEF\xBF\xBD\xEF\xBF\xBD byte");
  EXPECT_EQ(CleanCaption("overlong \xC0\xAF"), "overlong \xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(CleanCaption("cut \xE2\x82"), "cut \xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(CleanCaption(std::string("nul\0in", 6)), "nul in");
}

}  // namespace
}  // namespace dd::data
