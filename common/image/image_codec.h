// Encoding RGB images to PNG (libpng) and JPEG (libjpeg-turbo). Decoding,
// with EXIF orientation and colour conversion, is image_decoder.h.
#ifndef COMMON_IMAGE_IMAGE_CODEC_H_
#define COMMON_IMAGE_IMAGE_CODEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dd {

// 8-bit RGB, rows top to bottom, no padding: pixels.size() == width*height*3.
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;
};

// InvalidArgument for an empty image or a pixel buffer of the wrong size.
absl::StatusOr<std::string> EncodePng(const RgbImage& image);
absl::StatusOr<std::string> EncodeJpeg(const RgbImage& image, int quality = 90);

// `image` shrunk by the smallest whole factor that brings both sides to at
// most `max_side` (each output pixel the mean of a factor x factor block;
// edge pixels that do not fill a block are dropped); `image` itself when it
// fits. For previews (the status page's sample grid), not for training data.
RgbImage ShrinkToFit(const RgbImage& image, int max_side);

}  // namespace dd

#endif  // COMMON_IMAGE_IMAGE_CODEC_H_
