// A fixed-size pool of worker threads running queued closures in FIFO order.
// Used to keep blocking work (disk reads, fsync) off gRPC's reactor threads.
#ifndef COMMON_THREAD_THREAD_POOL_H_
#define COMMON_THREAD_THREAD_POOL_H_

#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace dd {

class ThreadPool {
 public:
  // Starts `num_threads` (>= 1) workers.
  explicit ThreadPool(int num_threads);
  // Runs every closure already scheduled, then joins the workers.
  ~ThreadPool();

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Queues `fn` to run on a worker. Must not be called after destruction
  // has begun.
  void Schedule(std::function<void()> fn);
  // Queues `fn` unless `max_queued` closures already wait (running ones do
  // not count); returns whether it was queued. For work that arrives from
  // the network, so a flood is refused instead of piling up.
  bool TrySchedule(std::function<void()> fn, size_t max_queued);

 private:
  void WorkLoop();

  std::vector<std::thread> threads_;  // Fixed after construction.

  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace dd

#endif  // COMMON_THREAD_THREAD_POOL_H_
