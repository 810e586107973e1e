// Decoding training images: JPEG (libjpeg-turbo, with its EXIF orientation
// applied through libexif), PNG (libpng) and WebP (libwebp), always to 8-bit
// RGB. Grey and palette images are expanded; images with alpha are
// composited onto a flat background (white by default), because a model
// trained on the undefined colour under transparent pixels learns noise.
//
// Every decoder runs in its strictest mode: a truncated or corrupt file is an
// error (DataLoss), never a partly grey image, so the data pipeline can skip
// and count it. Pure: no torch or gRPC types.
#ifndef COMMON_IMAGE_IMAGE_DECODER_H_
#define COMMON_IMAGE_IMAGE_DECODER_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/image/image_codec.h"

namespace dd {

enum class ImageFormat { kUnknown, kJpeg, kPng, kWebp };

// The format named by the first bytes (magic numbers), whatever the file's
// extension says.
ImageFormat SniffImageFormat(absl::string_view bytes);

struct DecodeOptions {
  // Images with more pixels are refused (ResourceExhausted) before any
  // pixel buffer is allocated: a 100-byte PNG can claim 2^31 x 2^31 pixels.
  int64_t max_pixels = int64_t{64} << 20;
  // Colour that transparent pixels are composited onto.
  uint8_t background = 255;
  // Apply the EXIF orientation of JPEG files (what every viewer shows).
  bool apply_exif_orientation = true;
};

struct ImageInfo {
  int width = 0;   // after the EXIF orientation
  int height = 0;
  ImageFormat format = ImageFormat::kUnknown;
  int orientation = 1;  // EXIF 1..8 (1: as stored)
};

// Reads only the headers. InvalidArgument for an unknown format, DataLoss
// for a header that cannot be parsed, ResourceExhausted past max_pixels.
absl::StatusOr<ImageInfo> ReadImageInfo(absl::string_view bytes, const DecodeOptions& options = {});

// Decodes `bytes` to RGB. Errors as ReadImageInfo, plus DataLoss for a
// corrupt or truncated body.
absl::StatusOr<RgbImage> DecodeImage(absl::string_view bytes, const DecodeOptions& options = {});

// The EXIF orientation (1..8) in a JPEG's APP1 segment; 1 when there is none
// or it is malformed.
int JpegExifOrientation(absl::string_view jpeg);

// `image` transformed as EXIF orientation `orientation` says it should be
// displayed (2: mirror, 3: rotate 180, 6: rotate 90 clockwise, ...).
RgbImage ApplyOrientation(const RgbImage& image, int orientation);

}  // namespace dd

#endif  // COMMON_IMAGE_IMAGE_DECODER_H_
