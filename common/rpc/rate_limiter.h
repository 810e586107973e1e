// RateLimiter: token buckets by key (a peer id, a remote address). Each key
// may take `burst` calls at once and one more every `interval`; beyond that
// Take says no. Keys whose bucket has filled again are the same as unknown
// ones, and Collect drops them, so memory stays bounded by the keys active
// within the last burst × interval. Thread-safe; no gRPC types.
#ifndef COMMON_RPC_RATE_LIMITER_H_
#define COMMON_RPC_RATE_LIMITER_H_

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/time/clock.h"

namespace dd {

class RateLimiter {
 public:
  // `burst` <= 0 disables the limit (Take always succeeds). `clock` must
  // outlive the limiter.
  RateLimiter(int burst, absl::Duration interval, Clock* clock);

  // Takes one call for `key`; false when its bucket is empty.
  bool Take(const std::string& key) ABSL_LOCKS_EXCLUDED(mu_);

  // Drops the buckets that are full again.
  void Collect() ABSL_LOCKS_EXCLUDED(mu_);

  // Keys with a bucket (for tests).
  size_t size() const ABSL_LOCKS_EXCLUDED(mu_);

  int burst() const { return burst_; }
  absl::Duration interval() const { return interval_; }

 private:
  struct Bucket {
    double tokens;
    absl::Time at;
  };
  double Refilled(const Bucket& b, absl::Time now) const;

  // Fixed after construction.
  const int burst_;
  const absl::Duration interval_;
  Clock* const clock_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dd

#endif  // COMMON_RPC_RATE_LIMITER_H_
