// Encoding RGB images to PNG (libpng) and JPEG (libjpeg-turbo).
// Decoding, with EXIF orientation and colour conversion, belongs to the
// trainer's data pipeline (trainer/data).
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

}  // namespace dd

#endif  // COMMON_IMAGE_IMAGE_CODEC_H_
