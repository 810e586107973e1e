#include "common/io/file_util.h"

#include <cstdlib>
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

}  // namespace
}  // namespace dd
