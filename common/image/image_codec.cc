#include "common/image/image_codec.h"

#include <png.h>
#include <turbojpeg.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace dd {
namespace {

absl::Status Validate(const RgbImage& image) {
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad RGB image ", image.width, "x", image.height, " with ",
        image.pixels.size(), " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> EncodePng(const RgbImage& image) {
  if (absl::Status s = Validate(image); !s.ok()) return s;
  png_image png = {};
  png.version = PNG_IMAGE_VERSION;
  png.width = image.width;
  png.height = image.height;
  png.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&png, nullptr, &size, 0, image.pixels.data(), 0, nullptr)) {
    return absl::InternalError(absl::StrCat("libpng: ", png.message));
  }
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&png, out.data(), &size, 0, image.pixels.data(), 0, nullptr)) {
    return absl::InternalError(absl::StrCat("libpng: ", png.message));
  }
  out.resize(size);
  return out;
}

absl::StatusOr<std::string> EncodeJpeg(const RgbImage& image, int quality) {
  if (absl::Status s = Validate(image); !s.ok()) return s;
  tjhandle handle = tjInitCompress();
  if (handle == nullptr) return absl::InternalError("tjInitCompress failed");
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  int rc = tjCompress2(handle, image.pixels.data(), image.width, 0, image.height, TJPF_RGB,
                       &buffer, &size, TJSAMP_420, quality, TJFLAG_ACCURATEDCT);
  std::string out;
  absl::Status status;
  if (rc != 0) {
    status = absl::InternalError(absl::StrCat("libjpeg-turbo: ", tjGetErrorStr2(handle)));
  } else {
    out.assign(reinterpret_cast<const char*>(buffer), size);
  }
  tjFree(buffer);
  tjDestroy(handle);
  if (!status.ok()) return status;
  return out;
}

RgbImage ShrinkToFit(const RgbImage& image, int max_side) {
  if (max_side <= 0 || (image.width <= max_side && image.height <= max_side)) return image;
  const int factor = (std::max(image.width, image.height) + max_side - 1) / max_side;
  RgbImage out;
  out.width = std::max(1, image.width / factor);
  out.height = std::max(1, image.height / factor);
  out.pixels.resize(size_t(out.width) * out.height * 3);
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      for (int c = 0; c < 3; ++c) {
        uint32_t sum = 0, n = 0;
        for (int dy = 0; dy < factor && y * factor + dy < image.height; ++dy) {
          for (int dx = 0; dx < factor && x * factor + dx < image.width; ++dx) {
            sum += image.pixels[(size_t(y * factor + dy) * image.width + x * factor + dx) * 3 + c];
            ++n;
          }
        }
        out.pixels[(size_t(y) * out.width + x) * 3 + c] = static_cast<uint8_t>((sum + n / 2) / n);
      }
    }
  }
  return out;
}

}  // namespace dd
