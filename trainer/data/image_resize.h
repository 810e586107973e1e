// Cutting and scaling a decoded image to its bucket: the crop of a CropPlan,
// scaled with antialiased bilinear filtering (the filter of diffusers'
// train_text_to_image: torchvision Resize, BILINEAR, antialias) so that
// downscaled photos do not alias.
#ifndef TRAINER_DATA_IMAGE_RESIZE_H_
#define TRAINER_DATA_IMAGE_RESIZE_H_

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "common/image/image_codec.h"
#include "trainer/data/buckets.h"

namespace dd::data {

// uint8 [3, out_height, out_width]. `flip` mirrors it horizontally.
// InvalidArgument when the plan does not fit the image.
absl::StatusOr<at::Tensor> CropAndResize(const RgbImage& image, const CropPlan& plan,
                                         bool flip = false);

}  // namespace dd::data

#endif  // TRAINER_DATA_IMAGE_RESIZE_H_
