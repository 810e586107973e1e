#include "common/thread/parallel_for.h"

#include <algorithm>
#include <thread>
#include <vector>

namespace dd {

void ParallelFor(size_t n, const std::function<void(size_t begin, size_t end)>& fn, int threads,
                 size_t min_per_thread) {
  if (n == 0) return;
  size_t want = threads > 0 ? static_cast<size_t>(threads)
                            : std::min<size_t>(16, std::max(1u, std::thread::hardware_concurrency()));
  want = std::max<size_t>(1, std::min(want, n / std::max<size_t>(1, min_per_thread)));
  if (want == 1) {
    fn(0, n);
    return;
  }
  const size_t per = (n + want - 1) / want;
  std::vector<std::thread> workers;
  workers.reserve(want - 1);
  for (size_t t = 1; t < want; ++t) {
    const size_t begin = t * per, end = std::min(n, begin + per);
    if (begin >= end) break;
    workers.emplace_back([&fn, begin, end] { fn(begin, end); });
  }
  fn(0, std::min(n, per));
  for (auto& w : workers) w.join();
}

}  // namespace dd
