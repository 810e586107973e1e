#include "common/image/image_codec.h"

#include <png.h>
#include <turbojpeg.h>

#include "gtest/gtest.h"

namespace dd {
namespace {

RgbImage Gradient(int w, int h) {
  RgbImage img{w, h, std::vector<uint8_t>(w * h * 3)};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &img.pixels[(y * w + x) * 3];
      p[0] = x * 255 / w;
      p[1] = y * 255 / h;
      p[2] = 128;
    }
  return img;
}

TEST(ImageCodec, PngRoundTripsExactly) {
  RgbImage img = Gradient(37, 21);
  auto png = EncodePng(img);
  ASSERT_TRUE(png.ok()) << png.status();
  png_image decoded = {};
  decoded.version = PNG_IMAGE_VERSION;
  ASSERT_TRUE(png_image_begin_read_from_memory(&decoded, png->data(), png->size()));
  decoded.format = PNG_FORMAT_RGB;
  std::vector<uint8_t> pixels(PNG_IMAGE_SIZE(decoded));
  ASSERT_TRUE(png_image_finish_read(&decoded, nullptr, pixels.data(), 0, nullptr));
  EXPECT_EQ(decoded.width, 37u);
  EXPECT_EQ(pixels, img.pixels);
}

TEST(ImageCodec, JpegDecodesToCloseValues) {
  RgbImage img = Gradient(64, 48);
  auto jpg = EncodeJpeg(img, 95);
  ASSERT_TRUE(jpg.ok()) << jpg.status();
  tjhandle h = tjInitDecompress();
  int w = 0, hh = 0, sub = 0, cs = 0;
  ASSERT_EQ(tjDecompressHeader3(h, reinterpret_cast<const unsigned char*>(jpg->data()),
                                jpg->size(), &w, &hh, &sub, &cs), 0);
  std::vector<uint8_t> out(w * hh * 3);
  ASSERT_EQ(tjDecompress2(h, reinterpret_cast<const unsigned char*>(jpg->data()), jpg->size(),
                          out.data(), w, 0, hh, TJPF_RGB, 0), 0);
  tjDestroy(h);
  ASSERT_EQ(w, 64);
  double err = 0;
  for (size_t i = 0; i < out.size(); ++i) err += std::abs(int(out[i]) - int(img.pixels[i]));
  EXPECT_LT(err / out.size(), 3.0);
}

TEST(ImageCodec, RejectsMalformedImages) {
  EXPECT_FALSE(EncodePng(RgbImage{}).ok());
  EXPECT_FALSE(EncodeJpeg(RgbImage{2, 2, std::vector<uint8_t>(5)}).ok());
}

TEST(ImageCodec, ShrinkToFitAveragesWholeBlocks) {
  // 5x2, shrunk to fit 2: factor 3 (ceil(5/2)); one output pixel from the
  // 3x2 block at the left, the two columns past it dropped.
  RgbImage img{5, 2, {}};
  for (int i = 0; i < 10; ++i) img.pixels.insert(img.pixels.end(), {uint8_t(i * 10), 7, 255});
  RgbImage small = ShrinkToFit(img, 2);
  ASSERT_EQ(small.width, 1);
  ASSERT_EQ(small.height, 1);
  // Red: (0+10+20 + 50+60+70) / 6 = 35.
  EXPECT_EQ(small.pixels, (std::vector<uint8_t>{35, 7, 255}));
  RgbImage fits = ShrinkToFit(img, 5);
  EXPECT_EQ(fits.pixels, img.pixels);
  RgbImage half = ShrinkToFit(Gradient(64, 48), 32);
  EXPECT_EQ(half.width, 32);
  EXPECT_EQ(half.height, 24);
}

}  // namespace
}  // namespace dd
