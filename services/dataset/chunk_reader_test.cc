#include "services/dataset/chunk_reader.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "gtest/gtest.h"
#include "services/dataset/indexer.h"
#include "services/dataset/testing/test_dataset.h"

namespace dd::dataset {
namespace {

class ChunkReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::NewTempDir("reader");
    for (int i = 0; i < 3; ++i) testing::WritePair(root_, "s" + std::to_string(i), "png", i);
    auto m = BuildManifest({root_, "", 10});
    ASSERT_TRUE(m.ok()) << m.status();
    manifest_ = std::move(*m);
    auto r = ChunkReader::Open(manifest_, 0);
    ASSERT_TRUE(r.ok());
    full_.resize((*r)->size());
    ASSERT_EQ(*(*r)->ReadAt(0, full_.data(), full_.size()), full_.size());
  }
  std::string root_;
  internal::Manifest manifest_;
  std::string full_;
};

TEST_F(ChunkReaderTest, EveryOffsetAndLengthGivesTheSameBytes) {
  auto r = ChunkReader::Open(manifest_, 0);
  ASSERT_TRUE(r.ok());
  for (uint64_t offset = 0; offset <= full_.size(); offset += 97) {
    for (size_t len : {size_t{1}, size_t{511}, size_t{512}, size_t{4096}, size_t{1 << 20}}) {
      std::string buf(len, '?');
      auto n = (*r)->ReadAt(offset, buf.data(), len);
      ASSERT_TRUE(n.ok());
      ASSERT_EQ(*n, std::min<uint64_t>(len, full_.size() - offset));
      ASSERT_EQ(buf.substr(0, *n), full_.substr(offset, *n)) << offset << "+" << len;
    }
  }
}

TEST_F(ChunkReaderTest, UnknownChunkAndOffsetPastEnd) {
  EXPECT_EQ(ChunkReader::Open(manifest_, 1).status().code(), absl::StatusCode::kNotFound);
  auto r = ChunkReader::Open(manifest_, 0);
  char c;
  EXPECT_EQ(*(*r)->ReadAt(full_.size(), &c, 1), 0u);
  EXPECT_EQ((*r)->ReadAt(full_.size() + 1, &c, 1).status().code(), absl::StatusCode::kOutOfRange);
}

TEST_F(ChunkReaderTest, ChangedMissingOrReplacedFilesAreDataLoss) {
  auto read_all = [&]() {
    auto r = ChunkReader::Open(manifest_, 0);
    std::string buf(full_.size(), '\0');
    return (*r)->ReadAt(0, buf.data(), buf.size()).status();
  };
  testing::WriteFile(root_ + "/s1.png", "changed");
  EXPECT_EQ(read_all().code(), absl::StatusCode::kDataLoss);
  std::filesystem::remove(root_ + "/s1.png");
  EXPECT_EQ(read_all().code(), absl::StatusCode::kDataLoss);
  std::string outside = testing::NewTempDir("reader_outside");
  testing::WriteFile(outside + "/x", "x");
  ASSERT_EQ(::symlink((outside + "/x").c_str(), (root_ + "/s1.png").c_str()), 0);
  EXPECT_EQ(read_all().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace dd::dataset
