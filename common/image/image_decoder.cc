#include "common/image/image_decoder.h"

#include <libexif/exif-data.h>
#include <png.h>
#include <turbojpeg.h>
#include <webp/decode.h>

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"

namespace dd {
namespace {

bool HasPrefix(absl::string_view bytes, absl::string_view magic, size_t at = 0) {
  return bytes.size() >= at + magic.size() && bytes.substr(at, magic.size()) == magic;
}

absl::Status CheckPixels(int64_t width, int64_t height, const DecodeOptions& options) {
  if (width <= 0 || height <= 0) {
    return absl::DataLossError(absl::StrCat("image has no pixels (", width, "x", height, ")"));
  }
  if (width * height > options.max_pixels) {
    return absl::ResourceExhaustedError(absl::StrCat("image of ", width, "x", height,
                                                     " pixels is larger than the limit of ",
                                                     options.max_pixels, " pixels"));
  }
  return absl::OkStatus();
}

// Composites RGBA onto `background`, rounding like a blend in 0..255.
RgbImage Composite(const uint8_t* rgba, int width, int height, uint8_t background) {
  RgbImage out;
  out.width = width;
  out.height = height;
  size_t n = static_cast<size_t>(width) * height;
  out.pixels.resize(n * 3);
  for (size_t i = 0; i < n; ++i) {
    uint32_t a = rgba[i * 4 + 3];
    for (int c = 0; c < 3; ++c) {
      uint32_t v = rgba[i * 4 + c] * a + background * (255 - a);
      out.pixels[i * 3 + c] = static_cast<uint8_t>((v + 127) / 255);
    }
  }
  return out;
}

struct TjDeleter {
  void operator()(void* h) const { tjDestroy(h); }
};

absl::StatusOr<ImageInfo> JpegInfo(absl::string_view bytes, tjhandle handle) {
  int width = 0, height = 0, subsamp = 0, colorspace = 0;
  if (tjDecompressHeader3(handle, reinterpret_cast<const unsigned char*>(bytes.data()),
                          bytes.size(), &width, &height, &subsamp, &colorspace) != 0) {
    return absl::DataLossError(absl::StrCat("JPEG header: ", tjGetErrorStr2(handle)));
  }
  ImageInfo info;
  info.format = ImageFormat::kJpeg;
  info.width = width;
  info.height = height;
  return info;
}

absl::StatusOr<RgbImage> DecodeJpeg(absl::string_view bytes, const DecodeOptions& options,
                                    int orientation) {
  std::unique_ptr<void, TjDeleter> handle(tjInitDecompress());
  if (!handle) return absl::InternalError("tjInitDecompress failed");
  auto info = JpegInfo(bytes, handle.get());
  if (!info.ok()) return info.status();
  if (absl::Status s = CheckPixels(info->width, info->height, options); !s.ok()) return s;
  RgbImage image;
  image.width = info->width;
  image.height = info->height;
  image.pixels.resize(static_cast<size_t>(image.width) * image.height * 3);
  // STOPONWARNING: a truncated file ("premature end of data") is an error,
  // not an image whose lower part is grey.
  if (tjDecompress2(handle.get(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), image.pixels.data(), image.width, 0, image.height, TJPF_RGB,
                    TJFLAG_STOPONWARNING | TJFLAG_ACCURATEDCT) != 0) {
    return absl::DataLossError(absl::StrCat("JPEG: ", tjGetErrorStr2(handle.get())));
  }
  if (orientation != 1) image = ApplyOrientation(image, orientation);
  return image;
}

absl::StatusOr<ImageInfo> PngInfo(absl::string_view bytes, png_image* png) {
  png->version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(png, bytes.data(), bytes.size())) {
    return absl::DataLossError(absl::StrCat("PNG header: ", png->message));
  }
  ImageInfo info;
  info.format = ImageFormat::kPng;
  info.width = static_cast<int>(png->width);
  info.height = static_cast<int>(png->height);
  if (png->width > (1u << 30) || png->height > (1u << 30)) {
    info.width = info.height = -1;  // refused by CheckPixels
  }
  return info;
}

absl::StatusOr<RgbImage> DecodePng(absl::string_view bytes, const DecodeOptions& options) {
  png_image png = {};
  auto info = PngInfo(bytes, &png);
  if (!info.ok()) return info.status();
  if (absl::Status s = CheckPixels(png.width, png.height, options); !s.ok()) {
    png_image_free(&png);
    return s;
  }
  // libpng expands palette and grey, and converts 16-bit to 8-bit; alpha is
  // composited by us so that the background colour is explicit.
  png.format = PNG_FORMAT_RGBA;
  std::vector<uint8_t> rgba(PNG_IMAGE_SIZE(png));
  if (!png_image_finish_read(&png, nullptr, rgba.data(), 0, nullptr)) {
    std::string message = png.message;
    png_image_free(&png);
    return absl::DataLossError(absl::StrCat("PNG: ", message));
  }
  return Composite(rgba.data(), png.width, png.height, options.background);
}

absl::StatusOr<ImageInfo> WebpInfo(absl::string_view bytes) {
  int width = 0, height = 0;
  if (!WebPGetInfo(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), &width,
                   &height)) {
    return absl::DataLossError("WebP header cannot be parsed");
  }
  ImageInfo info;
  info.format = ImageFormat::kWebp;
  info.width = width;
  info.height = height;
  return info;
}

absl::StatusOr<RgbImage> DecodeWebp(absl::string_view bytes, const DecodeOptions& options) {
  auto info = WebpInfo(bytes);
  if (!info.ok()) return info.status();
  if (absl::Status s = CheckPixels(info->width, info->height, options); !s.ok()) return s;
  std::vector<uint8_t> rgba(static_cast<size_t>(info->width) * info->height * 4);
  if (WebPDecodeRGBAInto(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                         rgba.data(), rgba.size(), info->width * 4) == nullptr) {
    return absl::DataLossError("WebP body is corrupt or truncated");
  }
  return Composite(rgba.data(), info->width, info->height, options.background);
}

}  // namespace

ImageFormat SniffImageFormat(absl::string_view bytes) {
  if (HasPrefix(bytes, "\xFF\xD8\xFF")) return ImageFormat::kJpeg;
  if (HasPrefix(bytes, "\x89PNG\r\n\x1A\n")) return ImageFormat::kPng;
  if (HasPrefix(bytes, "RIFF") && HasPrefix(bytes, "WEBP", 8)) return ImageFormat::kWebp;
  return ImageFormat::kUnknown;
}

int JpegExifOrientation(absl::string_view jpeg) {
  // The APP1 segment sits in the first 64 KiB; libexif scans the markers.
  absl::string_view head = jpeg.substr(0, 128 * 1024);
  ExifData* exif =
      exif_data_new_from_data(reinterpret_cast<const unsigned char*>(head.data()), head.size());
  if (exif == nullptr) return 1;
  int orientation = 1;
  ExifEntry* entry = exif_data_get_entry(exif, EXIF_TAG_ORIENTATION);
  if (entry != nullptr && entry->format == EXIF_FORMAT_SHORT && entry->components >= 1 &&
      entry->size >= 2) {
    int value = exif_get_short(entry->data, exif_data_get_byte_order(exif));
    if (value >= 1 && value <= 8) orientation = value;
  }
  exif_data_unref(exif);
  return orientation;
}

RgbImage ApplyOrientation(const RgbImage& image, int orientation) {
  if (orientation < 2 || orientation > 8) return image;
  const int w = image.width, h = image.height;
  const bool transpose = orientation >= 5;
  RgbImage out;
  out.width = transpose ? h : w;
  out.height = transpose ? w : h;
  out.pixels.resize(image.pixels.size());
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      // Source coordinates of output pixel (x, y) for each EXIF orientation.
      int sx = x, sy = y;
      switch (orientation) {
        case 2: sx = w - 1 - x; break;                         // mirror
        case 3: sx = w - 1 - x; sy = h - 1 - y; break;         // 180
        case 4: sy = h - 1 - y; break;                         // flip
        case 5: sx = y; sy = x; break;                         // transpose
        case 6: sx = y; sy = h - 1 - x; break;                 // 90 clockwise
        case 7: sx = w - 1 - y; sy = h - 1 - x; break;         // transverse
        case 8: sx = w - 1 - y; sy = x; break;                 // 90 counter-clockwise
      }
      const uint8_t* src = &image.pixels[(static_cast<size_t>(sy) * w + sx) * 3];
      uint8_t* dst = &out.pixels[(static_cast<size_t>(y) * out.width + x) * 3];
      dst[0] = src[0];
      dst[1] = src[1];
      dst[2] = src[2];
    }
  }
  return out;
}

absl::StatusOr<ImageInfo> ReadImageInfo(absl::string_view bytes, const DecodeOptions& options) {
  absl::StatusOr<ImageInfo> info;
  switch (SniffImageFormat(bytes)) {
    case ImageFormat::kJpeg: {
      std::unique_ptr<void, TjDeleter> handle(tjInitDecompress());
      if (!handle) return absl::InternalError("tjInitDecompress failed");
      info = JpegInfo(bytes, handle.get());
      if (info.ok() && options.apply_exif_orientation) {
        info->orientation = JpegExifOrientation(bytes);
        if (info->orientation >= 5) std::swap(info->width, info->height);
      }
      break;
    }
    case ImageFormat::kPng: {
      png_image png = {};
      info = PngInfo(bytes, &png);
      png_image_free(&png);
      break;
    }
    case ImageFormat::kWebp:
      info = WebpInfo(bytes);
      break;
    case ImageFormat::kUnknown:
      return absl::InvalidArgumentError(
          bytes.empty() ? "empty file" : "not a JPEG, PNG or WebP file");
  }
  if (!info.ok()) return info.status();
  if (absl::Status s = CheckPixels(info->width, info->height, options); !s.ok()) return s;
  return info;
}

absl::StatusOr<RgbImage> DecodeImage(absl::string_view bytes, const DecodeOptions& options) {
  switch (SniffImageFormat(bytes)) {
    case ImageFormat::kJpeg:
      return DecodeJpeg(bytes, options,
                        options.apply_exif_orientation ? JpegExifOrientation(bytes) : 1);
    case ImageFormat::kPng:
      return DecodePng(bytes, options);
    case ImageFormat::kWebp:
      return DecodeWebp(bytes, options);
    case ImageFormat::kUnknown:
      break;
  }
  return absl::InvalidArgumentError(bytes.empty() ? "empty file"
                                                  : "not a JPEG, PNG or WebP file");
}

}  // namespace dd
