#include "services/dataset/catalog.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "common/crypto/sha256.h"
#include "gtest/gtest.h"
#include "services/dataset/indexer.h"
#include "services/dataset/testing/test_dataset.h"

namespace dd::dataset {
namespace {

std::string Drain(ChunkStream* stream, absl::Status* status) {
  std::string out;
  v1::ChunkFrame frame;
  while (true) {
    *status = stream->Next(&frame);
    if (!status->ok() || stream->done()) return out;
    EXPECT_EQ(frame.offset(), out.size() + 0) ;
    EXPECT_LE(frame.data().size(), kMaxFrameBytes);
    out += frame.data();
  }
}

class CatalogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::NewTempDir("catalog");
    for (int i = 0; i < 7; ++i) testing::WritePair(root_, "s" + std::to_string(i), "jpg", i);
    auto m = BuildManifest({root_, "", 2});
    ASSERT_TRUE(m.ok());
    catalog_ = std::make_unique<DatasetCatalog>(std::move(*m), CatalogMetadata{"n", "d"}, 1000);
  }
  std::string root_;
  std::unique_ptr<DatasetCatalog> catalog_;
};

TEST_F(CatalogTest, InfoDescribesTheDataset) {
  v1::DatasetInfo info = catalog_->GetInfo();
  EXPECT_EQ(info.name(), "n");
  EXPECT_EQ(info.num_samples(), 7u);
  EXPECT_EQ(info.num_chunks(), 4u);
  EXPECT_EQ(info.chunk_size(), 2u);
  EXPECT_EQ(info.start_time(), "1970-01-01T00:00:01Z");
  EXPECT_EQ(info.manifest_sha256_hex().size(), 64u);
}

TEST_F(CatalogTest, PagesFollowTokensAndForeignTokensAreRejected) {
  std::vector<uint64_t> ids;
  std::string token;
  int pages = 0;
  do {
    auto page = catalog_->ListChunks(3, token);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& c : page->chunks()) ids.push_back(c.chunk_id());
    EXPECT_EQ(page->total_chunks(), 4u);
    token = page->next_page_token();
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(pages, 2);
  EXPECT_EQ(ids, (std::vector<uint64_t>{0, 1, 2, 3}));
  EXPECT_EQ(catalog_->ListChunks(0, "garbage").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(catalog_->ListChunks(0, "abcdefabcdef:1").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(catalog_->ListChunks(kMaxPageSize + 1, "").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CatalogTest, StreamsFromAnyOffsetAreSuffixesOfTheVerifiedChunk) {
  auto full_stream = catalog_->OpenStream(1, 0);
  ASSERT_TRUE(full_stream.ok());
  absl::Status status;
  std::string full = Drain(full_stream->get(), &status);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(DigestToHex(Sha256Of(full)), catalog_->ListChunks(0, "")->chunks(1).sha256_hex());
  for (uint64_t offset : {uint64_t{1}, uint64_t{512}, uint64_t{full.size() - 1}, uint64_t{full.size()}}) {
    auto stream = catalog_->OpenStream(1, offset);
    ASSERT_TRUE(stream.ok());
    std::string out;
    v1::ChunkFrame frame;
    while (true) {
      ASSERT_TRUE((*stream)->Next(&frame).ok());
      if ((*stream)->done()) break;
      EXPECT_EQ(frame.offset(), offset + out.size());
      out += frame.data();
    }
    EXPECT_EQ(out, full.substr(offset));
  }
  EXPECT_EQ(catalog_->OpenStream(99, 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(catalog_->OpenStream(1, full.size() + 1).status().code(),
            absl::StatusCode::kOutOfRange);
}

TEST_F(CatalogTest, SameSizeSameTimeEditIsCaughtByTheHash) {
  // Rewrite a caption with different bytes of the same length, then restore
  // its modification time: only the content hash can notice.
  std::string path = root_ + "/s0.txt";
  struct stat before;
  ASSERT_EQ(::stat(path.c_str(), &before), 0);
  std::string caption = testing::ReadFile(path);
  caption[0] = caption[0] == 'a' ? 'b' : 'a';
  testing::WriteFile(path, caption);
  struct timespec times[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
  auto stream = catalog_->OpenStream(0, 0);
  ASSERT_TRUE(stream.ok());
  absl::Status status;
  Drain(stream->get(), &status);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
}

}  // namespace
}  // namespace dd::dataset
