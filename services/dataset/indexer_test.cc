#include "services/dataset/indexer.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "absl/strings/escaping.h"
#include "common/crypto/sha256.h"
#include "gtest/gtest.h"
#include "services/dataset/chunk_reader.h"
#include "services/dataset/testing/test_dataset.h"

namespace dd::dataset {
namespace {

using testing::NewTempDir;
using testing::ReadFile;
using testing::WriteFile;
using testing::WritePair;
using testing::WriteTar;

std::set<std::string> SkippedPaths(const internal::Manifest& m) {
  std::set<std::string> out;
  for (const auto& s : m.skipped()) out.insert(s.path());
  return out;
}

std::string ChunkBytes(const internal::Manifest& m, uint64_t id) {
  auto reader = ChunkReader::Open(m, id);
  EXPECT_TRUE(reader.ok()) << reader.status();
  std::string out((*reader)->size(), '\0');
  EXPECT_EQ(*(*reader)->ReadAt(0, out.data(), out.size()), out.size());
  return out;
}

TEST(Indexer, PairsAreFoundRecursivelyAndUnpairedFilesReported) {
  std::string root = NewTempDir("pairs");
  WritePair(root, "a", "jpg", 0);
  WritePair(root + "/sub", "b", "png", 1);
  WritePair(root + "/sub/deeper", "c", "JPEG", 2);  // upper-case extension
  WriteFile(root + "/sub/d.json", "{\"w\": 48}");
  WritePair(root + "/sub", "d", "png", 3);
  WriteFile(root + "/lonely.jpg", testing::ImageBytes(4, "jpg"));   // no caption
  WriteFile(root + "/orphan.txt", "a caption without an image");
  WriteFile(root + "/empty.png", "");
  WriteFile(root + "/empty.txt", "caption of an empty image");
  WriteFile(root + "/notes.md", "ignored");

  IndexOptions options{root, "", 2};
  auto m = BuildManifest(options);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->num_samples(), 4u);
  EXPECT_EQ(m->chunks_size(), 2);
  EXPECT_EQ(SkippedPaths(*m),
            (std::set<std::string>{"lonely.jpg", "orphan.txt", "empty.png"}));
  // The json beside d.png travels with it.
  bool found_json = false;
  for (const auto& c : m->chunks())
    for (const auto& s : c.samples())
      for (const auto& mem : s.members())
        if (mem.ext() == "json") found_json = s.origin() == "sub/d.png";
  EXPECT_TRUE(found_json);
}

TEST(Indexer, ChunksAreTarsWhoseHashesAndMembersMatch) {
  std::string root = NewTempDir("tars");
  for (int i = 0; i < 5; ++i) WritePair(root, "img" + std::to_string(i), i % 2 ? "png" : "jpg", i);
  auto m = BuildManifest({root, "", 3});
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->chunks_size(), 2);
  std::string dir = NewTempDir("tars_out");
  for (int id = 0; id < 2; ++id) {
    std::string bytes = ChunkBytes(*m, id);
    EXPECT_EQ(bytes.size(), m->chunks(id).size_bytes());
    EXPECT_EQ(DigestToHex(Sha256Of(bytes)), absl::BytesToHexString(m->chunks(id).sha256()));
    // GNU tar extracts exactly the source bytes.
    std::string tar = dir + "/c" + std::to_string(id) + ".tar";
    WriteFile(tar, bytes);
    ASSERT_EQ(std::system(("cd " + dir + " && tar xf " + tar).c_str()), 0);
    for (const auto& s : m->chunks(id).samples()) {
      for (const auto& mem : s.members()) {
        std::string extracted = ReadFile(dir + "/" + s.key() + "." + mem.ext());
        std::string source = ReadFile(m->files(mem.file_index()).read_path());
        EXPECT_EQ(extracted, source);
        EXPECT_EQ(Sha256Of(source),
                  *DigestFromHex(absl::BytesToHexString(mem.sha256())));
      }
    }
  }
  // Deterministic: the same folder gives the same manifest hash.
  auto again = BuildManifest({root, "", 3});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->manifest_sha256(), m->manifest_sha256());
}

TEST(Indexer, CanonicalShardServedUnchangedIrregularShardRepacked) {
  std::string root = NewTempDir("shards");
  WriteTar(root + "/good.tar", testing::ShardMembers(0, 3));
  auto irregular = testing::ShardMembers(10, 3);
  irregular.erase(irregular.begin() + 3);  // k011 loses its caption
  WriteTar(root + "/bad.tar", irregular);
  std::string truncated = ReadFile(root + "/good.tar");
  WriteFile(root + "/truncated.tar", truncated.substr(0, truncated.size() / 2));

  auto m = BuildManifest({root, "", 100});
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->chunks_size(), 2);
  // Chunk 0: good.tar verbatim.
  EXPECT_TRUE(m->chunks(0).whole_file());
  EXPECT_EQ(ChunkBytes(*m, 0), ReadFile(root + "/good.tar"));
  EXPECT_EQ(m->chunks(0).samples_size(), 3);
  // Chunk 1: the two complete samples of bad.tar, repacked.
  EXPECT_FALSE(m->chunks(1).whole_file());
  EXPECT_EQ(m->chunks(1).samples_size(), 2);
  EXPECT_EQ(m->num_samples(), 5u);
  std::set<std::string> skipped = SkippedPaths(*m);
  EXPECT_TRUE(skipped.count("bad.tar#k011"));
  EXPECT_TRUE(skipped.count("truncated.tar"));
}

TEST(Indexer, PaxShardsAreRepacked) {
  std::string root = NewTempDir("pax");
  std::string src = NewTempDir("pax_src");
  testing::WriteFile(src + "/k1.jpg", testing::ImageBytes(1, "jpg"));
  testing::WriteFile(src + "/k1.txt", testing::Caption(1));
  ASSERT_EQ(std::system(("cd " + src + " && tar --format=pax -cf " + root +
                         "/s.tar k1.jpg k1.txt").c_str()), 0);
  auto m = BuildManifest({root, "", 10});
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->chunks_size(), 1);
  EXPECT_FALSE(m->chunks(0).whole_file());
  EXPECT_EQ(m->num_samples(), 1u);
}

TEST(Indexer, SymlinksOutOfTheRootAreNeverFollowed) {
  std::string outside = NewTempDir("outside");
  WriteFile(outside + "/secret.jpg", "SECRET-BYTES");
  WriteFile(outside + "/secret.txt", "secret caption");
  std::string root = NewTempDir("links");
  WritePair(root, "real", "jpg", 0);
  ASSERT_EQ(::symlink((outside + "/secret.jpg").c_str(), (root + "/secret.jpg").c_str()), 0);
  ASSERT_EQ(::symlink((outside + "/secret.txt").c_str(), (root + "/secret.txt").c_str()), 0);
  ASSERT_EQ(::symlink(outside.c_str(), (root + "/dirlink").c_str()), 0);
  // A link to a file inside the root is fine.
  ASSERT_EQ(::symlink((root + "/real.jpg").c_str(), (root + "/alias.jpg").c_str()), 0);
  WriteFile(root + "/alias.txt", "alias caption");

  auto m = BuildManifest({root, "", 10});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->num_samples(), 2u);  // real + alias
  std::set<std::string> skipped = SkippedPaths(*m);
  EXPECT_TRUE(skipped.count("secret.jpg"));
  EXPECT_TRUE(skipped.count("dirlink"));
  for (int id = 0; id < m->chunks_size(); ++id) {
    EXPECT_EQ(ChunkBytes(*m, id).find("SECRET-BYTES"), std::string::npos);
  }
}

TEST(Indexer, SavedManifestIsReusedUntilFilesChange) {
  std::string root = NewTempDir("reuse");
  std::string work = root + "/.work";  // inside the dataset: must be excluded
  for (int i = 0; i < 4; ++i) WritePair(root, "p" + std::to_string(i), "jpg", i);
  IndexOptions options{root, work, 2};
  auto first = LoadOrBuildManifest(options);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->reused);
  auto second = LoadOrBuildManifest(options);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(second->reused);
  EXPECT_EQ(second->manifest.manifest_sha256(), first->manifest.manifest_sha256());

  // Another chunk size: rebuilt.
  auto other = LoadOrBuildManifest({root, work, 3});
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->reused);
  ASSERT_TRUE(LoadOrBuildManifest(options).ok());

  // A changed caption: rebuilt with a different hash.
  WriteFile(root + "/p1.txt", "a different caption");
  auto changed = LoadOrBuildManifest(options);
  ASSERT_TRUE(changed.ok());
  EXPECT_FALSE(changed->reused);
  EXPECT_NE(changed->manifest.manifest_sha256(), first->manifest.manifest_sha256());

  // A new file: rebuilt.
  WritePair(root, "p9", "png", 9);
  auto added = LoadOrBuildManifest(options);
  ASSERT_TRUE(added.ok());
  EXPECT_FALSE(added->reused);
  EXPECT_EQ(added->manifest.num_samples(), 5u);

  // A corrupt saved manifest: rebuilt, not fatal.
  WriteFile(ManifestPath(work), "not a protobuf \xff\xff\xff");
  auto recovered = LoadOrBuildManifest(options);
  ASSERT_TRUE(recovered.ok()) << recovered.status();
  EXPECT_FALSE(recovered->reused);
  EXPECT_EQ(recovered->manifest.manifest_sha256(), added->manifest.manifest_sha256());
}

TEST(Indexer, BadOptionsAreClearErrors) {
  EXPECT_EQ(BuildManifest({"/nonexistent/dir", "", 4}).status().code(),
            absl::StatusCode::kNotFound);
  std::string root = NewTempDir("opts");
  EXPECT_EQ(BuildManifest({root, "", 0}).status().code(), absl::StatusCode::kInvalidArgument);
  WriteFile(root + "/file", "x");
  EXPECT_EQ(BuildManifest({root + "/file", "", 4}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto empty = BuildManifest({NewTempDir("empty"), "", 4});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->num_samples(), 0u);
}

}  // namespace
}  // namespace dd::dataset
