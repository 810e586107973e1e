// ParallelFor: one element-wise pass over a large array, cut into
// contiguous ranges run on several threads (the caller's included). For the
// passes over model-sized vectors that sit between a peer's local steps (a
// pseudo-gradient, an outer step, error feedback): every element is
// computed by the same operations whichever thread runs its range, so the
// result does not depend on the thread count (weights stay bit-identical
// across peers with different core counts).
#ifndef COMMON_THREAD_PARALLEL_FOR_H_
#define COMMON_THREAD_PARALLEL_FOR_H_

#include <cstddef>
#include <functional>

namespace dd {

// Calls fn(begin, end) on disjoint ranges covering [0, n) and returns when
// all have returned. Ranges hold at least `min_per_thread` elements, so
// small arrays run on the caller's thread alone; `threads` caps the
// threads (0: the machine's cores, at most 16). `fn` must not throw.
void ParallelFor(size_t n, const std::function<void(size_t begin, size_t end)>& fn,
                 int threads = 0, size_t min_per_thread = size_t{1} << 18);

}  // namespace dd

#endif  // COMMON_THREAD_PARALLEL_FOR_H_
