#include "trainer/data/buckets.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"

namespace dd::data {

absl::StatusOr<BucketSet> BucketSet::Make(const BucketOptions& options) {
  const int step = options.step;
  const int res = options.resolution;
  if (step <= 0 || res <= 0 || res % step != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "resolution ", res, " must be a positive multiple of the bucket step ", step));
  }
  BucketSet set;
  if (options.square_only) {
    set.buckets_.push_back({res, res});
    return set;
  }
  const int min_side = options.min_side > 0 ? options.min_side : std::max(step, res / 2 / step * step);
  const int max_side = options.max_side > 0 ? options.max_side : res * 2;
  if (min_side % step != 0 || max_side % step != 0 || min_side > res || max_side < res) {
    return absl::InvalidArgumentError(absl::StrCat("bucket sides ", min_side, "..", max_side,
                                                   " must be multiples of ", step,
                                                   " around the resolution ", res));
  }
  const int64_t area = int64_t{res} * res;
  std::set<std::pair<int, int>> sizes;
  for (int w = min_side; w <= max_side; w += step) {
    // The tallest height on the grid that keeps the area within res^2.
    int h = static_cast<int>(area / w / step * step);
    h = std::min(h, max_side);
    if (h < min_side) continue;
    sizes.insert({w, h});
    sizes.insert({h, w});
  }
  // Keep the buckets that use the area: one side cannot grow by a step
  // without passing res^2 (or max_side). 256x832 goes (256x896 fits);
  // 448x576 stays.
  auto fits = [&](int w, int h) { return w <= max_side && h <= max_side && int64_t{w} * h <= area; };
  for (const auto& [w, h] : sizes) {
    if (fits(w + step, h) || fits(w, h + step)) continue;
    set.buckets_.push_back({w, h});
  }
  std::sort(set.buckets_.begin(), set.buckets_.end(), [](const Bucket& a, const Bucket& b) {
    return int64_t{a.width} * b.height < int64_t{b.width} * a.height;
  });
  return set;
}

int BucketSet::Nearest(int width, int height) const {
  const double ratio = std::log(static_cast<double>(width) / height);
  int best = 0;
  double best_distance = 1e300;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    const Bucket& b = buckets_[i];
    double d = std::abs(std::log(static_cast<double>(b.width) / b.height) - ratio);
    double squareness = std::abs(std::log(static_cast<double>(b.width) / b.height));
    double best_squareness = std::abs(std::log(static_cast<double>(buckets_[best].width) /
                                               buckets_[best].height));
    if (d < best_distance - 1e-12 ||
        (std::abs(d - best_distance) <= 1e-12 && squareness < best_squareness)) {
      best = static_cast<int>(i);
      best_distance = d;
    }
  }
  return best;
}

CropPlan BucketSet::Plan(int width, int height, double jitter) const {
  CropPlan plan;
  plan.bucket = Nearest(width, height);
  const Bucket& b = buckets_[plan.bucket];
  plan.out_width = b.width;
  plan.out_height = b.height;
  jitter = std::clamp(jitter, 0.0, 1.0);
  // Scale that makes the image cover the bucket; the crop is the bucket's
  // rectangle mapped back into source pixels, so no oversized intermediate
  // image is ever made (a 10000x10 strip is cut before it is scaled).
  const double scale = std::max(static_cast<double>(b.width) / width,
                                static_cast<double>(b.height) / height);
  plan.src_width = std::clamp(static_cast<int>(std::lround(b.width / scale)), 1, width);
  plan.src_height = std::clamp(static_cast<int>(std::lround(b.height / scale)), 1, height);
  // jitter in [0, 1) picks each of the range + 1 offsets with equal chance;
  // 0.5 is the centre.
  auto offset = [&](int range) {
    if (jitter == 0.5) return range / 2;
    return static_cast<int>(std::floor(jitter * (range + 1)));
  };
  plan.src_x = offset(width - plan.src_width);
  plan.src_y = offset(height - plan.src_height);
  if (plan.src_x + plan.src_width > width) plan.src_x = width - plan.src_width;
  if (plan.src_y + plan.src_height > height) plan.src_y = height - plan.src_height;
  plan.crop_left = static_cast<int>(std::lround(plan.src_x * scale));
  plan.crop_top = static_cast<int>(std::lround(plan.src_y * scale));
  return plan;
}

}  // namespace dd::data
