#include "common/rpc/rate_limiter.h"

#include "gtest/gtest.h"

namespace dd {
namespace {

TEST(RateLimiter, ABurstThenOneCallPerInterval) {
  FakeClock clock;
  RateLimiter limiter(3, absl::Seconds(1), &clock);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.Take("a")) << i;
  EXPECT_FALSE(limiter.Take("a"));
  EXPECT_TRUE(limiter.Take("b"));  // keys are apart
  clock.Advance(absl::Milliseconds(999));
  EXPECT_FALSE(limiter.Take("a"));
  clock.Advance(absl::Milliseconds(1));
  EXPECT_TRUE(limiter.Take("a"));
  EXPECT_FALSE(limiter.Take("a"));
}

TEST(RateLimiter, FullBucketsAreCollectedAndZeroBurstDisables) {
  FakeClock clock;
  RateLimiter limiter(2, absl::Seconds(1), &clock);
  ASSERT_TRUE(limiter.Take("a"));
  ASSERT_TRUE(limiter.Take("b"));
  clock.Advance(absl::Milliseconds(500));
  limiter.Collect();
  EXPECT_EQ(limiter.size(), 2u);  // not full yet
  clock.Advance(absl::Milliseconds(500));
  limiter.Collect();
  EXPECT_EQ(limiter.size(), 0u);
  RateLimiter off(0, absl::Seconds(1), &clock);
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(off.Take("a"));
}

}  // namespace
}  // namespace dd
