#include "common/rpc/rate_limiter.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"

namespace dd {

RateLimiter::RateLimiter(int burst, absl::Duration interval, Clock* clock)
    : burst_(burst), interval_(interval), clock_(clock) {}

double RateLimiter::Refilled(const Bucket& b, absl::Time now) const {
  return std::min<double>(burst_, b.tokens + absl::FDivDuration(now - b.at, interval_));
}

bool RateLimiter::Take(const std::string& key) {
  if (burst_ <= 0) return true;
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = buckets_.try_emplace(key, Bucket{static_cast<double>(burst_), now});
  Bucket& b = it->second;
  b.tokens = Refilled(b, now);
  b.at = now;
  // (Refills add fractions of a token: a tolerance keeps a whole interval
  // from coming out a hair short.)
  if (b.tokens < 1 - 1e-9) return false;
  b.tokens = std::max(0.0, b.tokens - 1);
  return true;
}

void RateLimiter::Collect() {
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  absl::erase_if(buckets_, [&](const auto& entry) { return Refilled(entry.second, now) >= burst_; });
}

size_t RateLimiter::size() const {
  absl::MutexLock lock(&mu_);
  return buckets_.size();
}

}  // namespace dd
