#include "common/io/file_util.h"

#include <cstdlib>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace dd {
namespace {

std::string TmpPath(const std::string& name) {
  return std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
}

TEST(FileUtil, WriteAtomicallyThenReadBack) {
  std::string path = TmpPath("a.txt");
  ASSERT_TRUE(WriteFileAtomically(path, "first").ok());
  ASSERT_TRUE(WriteFileAtomically(path, std::string("sec\0ond", 7)).ok());
  auto read = ReadFileToString(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, std::string("sec\0ond", 7));
}

TEST(FileUtil, MissingFileIsNotFoundAndNamesPath) {
  auto read = ReadFileToString(TmpPath("missing"));
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(read.status().message().find("missing"), absl::string_view::npos);
}

TEST(FileUtil, OversizedFileIsRefused) {
  std::string path = TmpPath("big");
  ASSERT_TRUE(WriteFileAtomically(path, std::string(100, 'x')).ok());
  EXPECT_EQ(ReadFileToString(path, 99).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(ReadFileToString(path, 100).ok());
}

TEST(FileUtil, WriteIntoMissingDirectoryFails) {
  EXPECT_EQ(WriteFileAtomically(TmpPath("no/such/dir/f"), "x").code(),
            absl::StatusCode::kNotFound);
}

TEST(FileUtil, LinkOrCopyTreeLinksTheKeptEntries) {
  namespace fs = std::filesystem;
  std::string from = TmpPath("tree_from"), to = TmpPath("tree_to");
  fs::create_directories(from + "/keep/sub");
  fs::create_directories(from + "/drop");
  ASSERT_TRUE(WriteFileAtomically(from + "/keep/sub/a.bin", "aaa").ok());
  ASSERT_TRUE(WriteFileAtomically(from + "/drop/b.bin", "bbb").ok());
  ASSERT_TRUE(WriteFileAtomically(from + "/index.json", "{}").ok());
  ASSERT_TRUE(LinkOrCopyTree(from, to, [](const std::string& n) { return n != "drop"; }).ok());
  EXPECT_TRUE(fs::equivalent(from + "/keep/sub/a.bin", to + "/keep/sub/a.bin"));
  EXPECT_EQ(*ReadFileToString(to + "/index.json"), "{}");
  EXPECT_FALSE(fs::exists(to + "/drop"));
  EXPECT_FALSE(LinkOrCopyTree("/proc/self/no-such-dir", "/proc/x/y", [](const std::string&) { return true; }).ok());
}

TEST(FileUtil, UserCacheDirFollowsXdg) {
  setenv("XDG_CACHE_HOME", "/xdg/cache", 1);
  EXPECT_EQ(UserCacheDir(), "/xdg/cache");
  unsetenv("XDG_CACHE_HOME");
  setenv("HOME", "/home/someone", 1);
  EXPECT_EQ(UserCacheDir(), "/home/someone/.cache");
}

}  // namespace
}  // namespace dd
