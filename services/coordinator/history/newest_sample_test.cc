#include "services/coordinator/history/newest_sample.h"

#include <filesystem>

#include "common/image/image_codec.h"
#include "common/image/image_decoder.h"
#include "common/io/file_util.h"
#include "gtest/gtest.h"

namespace dd::coordinator {
namespace {

std::string Png(int width, int height, uint8_t value) {
  RgbImage image;
  image.width = width;
  image.height = height;
  image.pixels.assign(size_t(width) * height * 3, value);
  return *EncodePng(image);
}

std::string TempDir() {
  std::string dir = std::string(::testing::TempDir()) + "/newest_sample_" +
                    ::testing::UnitTest::GetInstance()->current_test_info()->name();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(NewestSample, KeepsTheNewestStepOnly) {
  auto store = NewestSample::Open("");
  EXPECT_EQ(store->Get(), nullptr);
  EXPECT_TRUE(*store->Offer(5, "a", Png(8, 4, 10), absl::FromUnixMillis(1000)));
  EXPECT_FALSE(*store->Offer(5, "b", Png(8, 4, 20), absl::FromUnixMillis(2000)));
  EXPECT_FALSE(*store->Offer(3, "b", Png(8, 4, 20), absl::FromUnixMillis(2000)));
  auto grid = store->Get();
  ASSERT_NE(grid, nullptr);
  EXPECT_EQ(grid->step, 5u);
  EXPECT_EQ(grid->peer_id, "a");
  EXPECT_EQ(grid->unix_ms, 1000);
  EXPECT_EQ(grid->width, 8);
  EXPECT_EQ(grid->height, 4);
  auto decoded = DecodeImage(grid->png);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->pixels[0], 10);
  EXPECT_TRUE(*store->Offer(6, "b", Png(2, 2, 30), absl::FromUnixMillis(3000)));
  EXPECT_EQ(store->Get()->peer_id, "b");
}

TEST(NewestSample, RefusesWhatIsNotASmallValidPng) {
  auto store = NewestSample::Open("");
  EXPECT_EQ(store->Offer(1, "a", "not an image", absl::Now()).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::string png = Png(16, 16, 1);
  EXPECT_EQ(store->Offer(1, "a", png.substr(0, png.size() / 2), absl::Now()).status().code(),
            absl::StatusCode::kInvalidArgument);  // truncated
  EXPECT_EQ(store->Offer(1, "a", std::string(kMaxSamplePngBytes + 1, 'x'), absl::Now())
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Offer(1, "a", Png(4096, 1025, 0), absl::Now()).status().code(),
            absl::StatusCode::kInvalidArgument);  // above 4 Mpixels
  EXPECT_EQ(store->Get(), nullptr);
}

TEST(NewestSample, SurvivesARestart) {
  const std::string dir = TempDir();
  ASSERT_TRUE(*NewestSample::Open(dir)->Offer(7, "peer-1", Png(6, 3, 99), absl::FromUnixMillis(5)));
  auto reopened = NewestSample::Open(dir)->Get();
  ASSERT_NE(reopened, nullptr);
  EXPECT_EQ(reopened->step, 7u);
  EXPECT_EQ(reopened->peer_id, "peer-1");
  EXPECT_EQ(reopened->width, 6);
  EXPECT_EQ(DecodeImage(reopened->png)->pixels[0], 99);
  // A damaged record is no grid, not a crash.
  ASSERT_TRUE(WriteFileAtomically(dir + "/newest_sample.meta", "garbage").ok());
  EXPECT_EQ(NewestSample::Open(dir)->Get(), nullptr);
}

}  // namespace
}  // namespace dd::coordinator
