#include "trainer/data/buckets.h"

#include "gtest/gtest.h"

namespace dd::data {
namespace {

TEST(Buckets, EqualAreaOnTheGrid) {
  auto set = BucketSet::Make({});
  ASSERT_TRUE(set.ok());
  bool has_square = false;
  for (const Bucket& b : set->buckets()) {
    EXPECT_EQ(b.width % 64, 0);
    EXPECT_EQ(b.height % 64, 0);
    EXPECT_LE(b.width * b.height, 512 * 512);
    // Maximal: neither side can grow by a grid step within the area.
    EXPECT_GT((b.width + 64) * b.height, 512 * 512);
    EXPECT_GT(b.width * (b.height + 64), 512 * 512);
    EXPECT_GE(std::min(b.width, b.height), 256);
    EXPECT_LE(std::max(b.width, b.height), 1024);
    has_square |= b.width == 512 && b.height == 512;
  }
  EXPECT_TRUE(has_square);
  EXPECT_EQ(set->buckets().size(), 9u);  // 256x1024 ... 512x512 ... 1024x256
}

TEST(Buckets, NearestAspectRatio) {
  auto set = *BucketSet::Make({});
  auto size = [&](int w, int h) {
    const Bucket& b = set.buckets()[set.Nearest(w, h)];
    return std::make_pair(b.width, b.height);
  };
  EXPECT_EQ(size(1000, 1000), std::make_pair(512, 512));
  EXPECT_EQ(size(1920, 1080), std::make_pair(640, 384));  // 1.78 -> 1.67 (768x320 is 2.4)
  EXPECT_EQ(size(1080, 1920), std::make_pair(384, 640));
  EXPECT_EQ(size(10000, 10), std::make_pair(1024, 256));  // the widest there is
  EXPECT_EQ(size(1, 1), std::make_pair(512, 512));
}

TEST(Buckets, PlanCutsBeforeScaling) {
  auto set = *BucketSet::Make({});
  CropPlan p = set.Plan(10000, 10);
  EXPECT_EQ(p.out_width, 1024);
  EXPECT_EQ(p.out_height, 256);
  EXPECT_EQ(p.src_height, 10);
  EXPECT_EQ(p.src_width, 40);  // aspect 4:1 of the bucket
  EXPECT_EQ(p.src_x, (10000 - 40) / 2);
  // Square image into the square bucket: no crop.
  CropPlan q = set.Plan(600, 600);
  EXPECT_EQ(q.src_width, 600);
  EXPECT_EQ(q.src_x, 0);
  EXPECT_EQ(q.crop_left, 0);
  // Jitter 0 and 1 place the crop at either end; crop_left is in scaled pixels.
  CropPlan left = set.Plan(2000, 1000, 0.0), right = set.Plan(2000, 1000, 0.999999);
  EXPECT_EQ(left.src_x, 0);
  EXPECT_EQ(right.src_x + right.src_width, 2000);
  EXPECT_NEAR(right.crop_left, right.src_x * double(right.out_height) / 1000, 1.0);
}

TEST(Buckets, SquareModeAndBadOptions) {
  BucketOptions o;
  o.square_only = true;
  o.resolution = 256;
  auto set = *BucketSet::Make(o);
  ASSERT_EQ(set.buckets().size(), 1u);
  CropPlan p = set.Plan(300, 200);
  EXPECT_EQ(p.out_width, 256);
  EXPECT_EQ(p.src_width, 200);
  EXPECT_EQ(p.src_x, 50);
  BucketOptions bad;
  bad.resolution = 500;
  EXPECT_FALSE(BucketSet::Make(bad).ok());
  bad.resolution = 512;
  bad.min_side = 1024;
  EXPECT_FALSE(BucketSet::Make(bad).ok());
}

}  // namespace
}  // namespace dd::data
