#include "common/thread/parallel_for.h"

#include <atomic>
#include <vector>

#include "gtest/gtest.h"

namespace dd {
namespace {

TEST(ParallelFor, CoversEveryIndexExactlyOnceWhateverTheThreadCount) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{1000}, size_t{100003}}) {
    for (int threads : {0, 1, 2, 3, 16}) {
      std::vector<std::atomic<int>> seen(n);
      ParallelFor(
          n,
          [&](size_t begin, size_t end) {
            ASSERT_LE(begin, end);
            for (size_t i = begin; i < end; ++i) seen[i]++;
          },
          threads, /*min_per_thread=*/100);
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(seen[i].load(), 1) << n << " " << threads << " " << i;
    }
  }
}

TEST(ParallelFor, SmallArraysStayOnTheCallersThread) {
  std::atomic<int> calls{0};
  ParallelFor(1000, [&](size_t begin, size_t end) {
    EXPECT_EQ(begin, 0u);
    EXPECT_EQ(end, 1000u);
    calls++;
  }, /*threads=*/8, /*min_per_thread=*/1000);
  EXPECT_EQ(calls.load(), 1);
}

}  // namespace
}  // namespace dd
