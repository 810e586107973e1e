// Aspect-ratio buckets (as NovelAI and kohya's trainers made common): a set
// of equal-area resolutions on a 64-pixel grid, so a batch of tall images is
// trained tall instead of being cropped square. Each image goes to the bucket
// nearest its aspect ratio; a crop of that aspect ratio is cut from it (centred
// or random) and scaled to the bucket's size. Pure: no torch types.
#ifndef TRAINER_DATA_BUCKETS_H_
#define TRAINER_DATA_BUCKETS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace dd::data {

struct Bucket {
  int width = 0;
  int height = 0;
};

struct BucketOptions {
  int resolution = 512;  // buckets hold at most resolution^2 pixels
  int step = 64;         // every side is a multiple of this
  int min_side = 0;      // 0: resolution / 2
  int max_side = 0;      // 0: resolution * 2
  bool square_only = false;  // one bucket, resolution x resolution
};

// Where to cut an image and what size to scale the cut to.
struct CropPlan {
  int bucket = 0;                  // index into the bucket list
  int src_x = 0, src_y = 0;        // crop rectangle in the source image
  int src_width = 0, src_height = 0;
  int out_width = 0, out_height = 0;  // the bucket's size
  // SDXL's crop conditioning: the crop's top-left corner in the image as
  // scaled to cover the bucket.
  int crop_top = 0, crop_left = 0;
};

class BucketSet {
 public:
  // InvalidArgument when the sides are not positive multiples of `step`, or
  // min_side > resolution or max_side < resolution.
  static absl::StatusOr<BucketSet> Make(const BucketOptions& options);

  const std::vector<Bucket>& buckets() const { return buckets_; }

  // The bucket whose aspect ratio is nearest (in log space) to
  // width/height. Ties go to the squarer bucket. width, height > 0.
  int Nearest(int width, int height) const;

  // The crop of an image of width x height for its nearest bucket. `jitter`
  // in [0, 1) places the crop along the axis that is cut (0.5: centred); the
  // caller draws it at random for random crops.
  CropPlan Plan(int width, int height, double jitter = 0.5) const;

 private:
  std::vector<Bucket> buckets_;  // sorted by aspect ratio, widest last
};

}  // namespace dd::data

#endif  // TRAINER_DATA_BUCKETS_H_
