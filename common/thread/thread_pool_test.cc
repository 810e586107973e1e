#include "common/thread/thread_pool.h"

#include <atomic>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace dd {
namespace {

TEST(ThreadPool, RunsEverythingBeforeDestruction) {
  std::atomic<int> sum{0};
  {
    ThreadPool pool(3);
    for (int i = 1; i <= 1000; ++i) pool.Schedule([&sum, i] { sum += i; });
  }
  EXPECT_EQ(sum.load(), 500500);
}

TEST(ThreadPool, WorkersRunConcurrently) {
  ThreadPool pool(2);
  absl::Notification first_started, release;
  std::atomic<bool> second_ran{false};
  pool.Schedule([&] {
    first_started.Notify();
    release.WaitForNotification();
  });
  first_started.WaitForNotification();
  absl::Notification second_done;
  pool.Schedule([&] {
    second_ran = true;
    second_done.Notify();
  });
  second_done.WaitForNotification();  // would hang with one worker
  EXPECT_TRUE(second_ran);
  release.Notify();
}

}  // namespace
TEST(ThreadPool, TryScheduleRefusesBeyondTheQueueBound) {
  ThreadPool pool(1);
  absl::Notification started, release, drained;
  // The one worker is busy; then two closures may wait, a third may not.
  pool.Schedule([&] {
    started.Notify();
    release.WaitForNotification();
  });
  started.WaitForNotification();
  EXPECT_TRUE(pool.TrySchedule([] {}, 2));
  EXPECT_TRUE(pool.TrySchedule([&] { drained.Notify(); }, 2));
  EXPECT_FALSE(pool.TrySchedule([] {}, 2));
  release.Notify();
  drained.WaitForNotification();
  EXPECT_TRUE(pool.TrySchedule([] {}, 2));
}

}  // namespace dd
