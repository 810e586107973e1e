#include "common/image/image_decoder.h"

#include <png.h>
#include <webp/encode.h>

#include "common/image/image_codec.h"
#include "gtest/gtest.h"

namespace dd {
namespace {

RgbImage Gradient(int w, int h) {
  RgbImage img;
  img.width = w;
  img.height = h;
  img.pixels.resize(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &img.pixels[(static_cast<size_t>(y) * w + x) * 3];
      p[0] = static_cast<uint8_t>(x * 255 / std::max(1, w - 1));
      p[1] = static_cast<uint8_t>(y * 255 / std::max(1, h - 1));
      p[2] = 90;
    }
  }
  return img;
}

std::string WritePng(const std::vector<uint8_t>& pixels, int w, int h, png_uint_32 format) {
  png_image png = {};
  png.version = PNG_IMAGE_VERSION;
  png.width = w;
  png.height = h;
  png.format = format;
  png_alloc_size_t size = 0;
  EXPECT_TRUE(png_image_write_to_memory(&png, nullptr, &size, 0, pixels.data(), 0, nullptr));
  std::string out(size, '\0');
  EXPECT_TRUE(png_image_write_to_memory(&png, out.data(), &size, 0, pixels.data(), 0, nullptr));
  out.resize(size);
  return out;
}

// An APP1 "Exif" segment holding one IFD0 entry: Orientation (0x0112),
// SHORT, little-endian TIFF, as cameras write it.
std::string WithExifOrientation(const std::string& jpeg, int orientation) {
  std::string tiff = std::string("II*\0", 4) + std::string("\x08\0\0\0", 4);
  tiff += std::string("\x01\0", 2);                                  // one entry
  tiff += std::string("\x12\x01\x03\0\x01\0\0\0", 8);                 // tag, SHORT, count 1
  tiff += std::string(1, static_cast<char>(orientation)) + std::string("\0\0\0", 3);
  tiff += std::string("\0\0\0\0", 4);                                 // no next IFD
  std::string payload = std::string("Exif\0\0", 6) + tiff;
  size_t len = payload.size() + 2;
  std::string app1 = "\xFF\xE1";
  app1 += static_cast<char>(len >> 8);
  app1 += static_cast<char>(len & 0xFF);
  app1 += payload;
  return jpeg.substr(0, 2) + app1 + jpeg.substr(2);
}

TEST(ImageDecoder, JpegRoundTripIsClose) {
  RgbImage src = Gradient(64, 48);
  std::string jpeg = *EncodeJpeg(src, 95);
  EXPECT_EQ(SniffImageFormat(jpeg), ImageFormat::kJpeg);
  auto img = DecodeImage(jpeg);
  ASSERT_TRUE(img.ok()) << img.status();
  ASSERT_EQ(img->width, 64);
  ASSERT_EQ(img->height, 48);
  double err = 0;
  for (size_t i = 0; i < src.pixels.size(); ++i) err += std::abs(src.pixels[i] - img->pixels[i]);
  EXPECT_LT(err / src.pixels.size(), 4.0);
}

TEST(ImageDecoder, ExifOrientationRotatesAndSwapsSize) {
  RgbImage src = Gradient(40, 16);
  std::string jpeg = *EncodeJpeg(src, 100);
  auto plain = DecodeImage(jpeg);
  ASSERT_TRUE(plain.ok());
  for (int orientation = 1; orientation <= 8; ++orientation) {
    std::string tagged = WithExifOrientation(jpeg, orientation);
    EXPECT_EQ(JpegExifOrientation(tagged), orientation);
    auto info = ReadImageInfo(tagged);
    ASSERT_TRUE(info.ok()) << info.status();
    auto img = DecodeImage(tagged);
    ASSERT_TRUE(img.ok()) << img.status();
    RgbImage want = ApplyOrientation(*plain, orientation);
    EXPECT_EQ(img->width, want.width);
    EXPECT_EQ(img->pixels, want.pixels) << orientation;
    EXPECT_EQ(info->width, img->width);
    EXPECT_EQ(info->height, img->height);
  }
  // Orientation 6 (camera held upright): 40x16 stored -> 16x40 shown, and the
  // stored top-left pixel ends at the top-right.
  RgbImage r = ApplyOrientation(*plain, 6);
  ASSERT_EQ(r.width, 16);
  ASSERT_EQ(r.height, 40);
  for (int c = 0; c < 3; ++c) EXPECT_EQ(r.pixels[(15) * 3 + c], plain->pixels[c]);
  DecodeOptions keep;
  keep.apply_exif_orientation = false;
  EXPECT_EQ(DecodeImage(WithExifOrientation(jpeg, 6), keep)->width, 40);
}

TEST(ImageDecoder, GreyAndAlphaPngBecomeRgb) {
  std::vector<uint8_t> grey = {0, 128, 255, 7};
  auto g = DecodeImage(WritePng(grey, 2, 2, PNG_FORMAT_GRAY));
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_EQ(g->pixels.size(), 12u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(g->pixels[i * 3], grey[i]);
    EXPECT_EQ(g->pixels[i * 3 + 1], grey[i]);
    EXPECT_EQ(g->pixels[i * 3 + 2], grey[i]);
  }
  // Opaque red, transparent (anything), half-transparent black.
  std::vector<uint8_t> rgba = {255, 0, 0, 255, 12, 34, 56, 0, 0, 0, 0, 128};
  auto a = DecodeImage(WritePng(rgba, 3, 1, PNG_FORMAT_RGBA));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->pixels, (std::vector<uint8_t>{255, 0, 0, 255, 255, 255, 127, 127, 127}));
  DecodeOptions black;
  black.background = 0;
  EXPECT_EQ(DecodeImage(WritePng(rgba, 3, 1, PNG_FORMAT_RGBA), black)->pixels[3], 0);
  std::vector<uint8_t> ga = {200, 255, 200, 0};
  auto ga_img = DecodeImage(WritePng(ga, 2, 1, PNG_FORMAT_GA));
  ASSERT_TRUE(ga_img.ok());
  EXPECT_EQ(ga_img->pixels, (std::vector<uint8_t>{200, 200, 200, 255, 255, 255}));
}

TEST(ImageDecoder, WebpLossyAndLossless) {
  RgbImage src = Gradient(33, 17);
  uint8_t* out = nullptr;
  size_t size = WebPEncodeLosslessRGB(src.pixels.data(), 33, 17, 33 * 3, &out);
  ASSERT_GT(size, 0u);
  std::string lossless(reinterpret_cast<char*>(out), size);
  WebPFree(out);
  EXPECT_EQ(SniffImageFormat(lossless), ImageFormat::kWebp);
  auto img = DecodeImage(lossless);
  ASSERT_TRUE(img.ok()) << img.status();
  EXPECT_EQ(img->pixels, src.pixels);
  size = WebPEncodeRGB(src.pixels.data(), 33, 17, 33 * 3, 90, &out);
  std::string lossy(reinterpret_cast<char*>(out), size);
  WebPFree(out);
  auto info = ReadImageInfo(lossy);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->width, 33);
  EXPECT_EQ(info->height, 17);
  EXPECT_TRUE(DecodeImage(lossy).ok());
  EXPECT_EQ(DecodeImage(lossy.substr(0, lossy.size() / 2)).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(ImageDecoder, CorruptTruncatedAndEmptyAreErrors) {
  std::string jpeg = *EncodeJpeg(Gradient(64, 64), 90);
  auto truncated = DecodeImage(jpeg.substr(0, jpeg.size() / 2));
  EXPECT_EQ(truncated.status().code(), absl::StatusCode::kDataLoss) << truncated.status();
  EXPECT_EQ(DecodeImage("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeImage("hello, not an image").status().code(), absl::StatusCode::kInvalidArgument);
  std::string png = *EncodePng(Gradient(16, 16));
  EXPECT_EQ(DecodeImage(png.substr(0, png.size() - 20)).status().code(),
            absl::StatusCode::kDataLoss);
  std::string garbage = jpeg;
  for (size_t i = 600; i < garbage.size(); i += 7) garbage[i] = static_cast<char>(i);
  EXPECT_FALSE(DecodeImage(garbage).ok());
}

TEST(ImageDecoder, ExtremeSizes) {
  auto one = DecodeImage(*EncodePng(Gradient(1, 1)));
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->pixels.size(), 3u);
  auto strip = DecodeImage(*EncodeJpeg(Gradient(10000, 10), 90));
  ASSERT_TRUE(strip.ok()) << strip.status();
  EXPECT_EQ(strip->width, 10000);
  DecodeOptions small;
  small.max_pixels = 50000;
  EXPECT_EQ(DecodeImage(*EncodeJpeg(Gradient(10000, 10), 90), small).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ReadImageInfo(*EncodePng(Gradient(300, 300)), small).status().code(),
            absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace dd
