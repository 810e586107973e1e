#include "trainer/data/image_resize.h"

#include "absl/strings/str_cat.h"

namespace dd::data {

absl::StatusOr<at::Tensor> CropAndResize(const RgbImage& image, const CropPlan& plan, bool flip) {
  if (plan.src_x < 0 || plan.src_y < 0 || plan.src_width <= 0 || plan.src_height <= 0 ||
      plan.src_x + plan.src_width > image.width || plan.src_y + plan.src_height > image.height ||
      plan.out_width <= 0 || plan.out_height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "crop ", plan.src_width, "x", plan.src_height, "+", plan.src_x, "+", plan.src_y,
        " does not fit a ", image.width, "x", image.height, " image"));
  }
  try {
    at::Tensor hwc = at::from_blob(const_cast<uint8_t*>(image.pixels.data()),
                                   {image.height, image.width, 3}, at::kByte);
    at::Tensor crop = hwc.slice(0, plan.src_y, plan.src_y + plan.src_height)
                          .slice(1, plan.src_x, plan.src_x + plan.src_width)
                          .permute({2, 0, 1});
    at::Tensor out;
    if (plan.src_width == plan.out_width && plan.src_height == plan.out_height) {
      out = crop.contiguous();
    } else {
      at::Tensor f = crop.unsqueeze(0).to(at::kFloat);
      f = at::_upsample_bilinear2d_aa(f, {plan.out_height, plan.out_width}, /*align_corners=*/false,
                                     c10::nullopt, c10::nullopt);
      out = f.squeeze(0).round_().clamp_(0, 255).to(at::kByte);
    }
    if (flip) out = out.flip({2}).contiguous();
    return out;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("resize: ", e.what_without_backtrace()));
  }
}

}  // namespace dd::data
