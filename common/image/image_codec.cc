#include "common/image/image_codec.h"

#include <png.h>
#include <turbojpeg.h>

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

}  // namespace dd
