#include "trainer/data/synthetic_shapes.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace dd {
namespace {

TEST(SyntheticShapes, DeterministicAndVaried) {
  ShapeSample a = RenderShapeSample(7, 3, 32, 24);
  ShapeSample b = RenderShapeSample(7, 3, 32, 24);
  EXPECT_EQ(a.caption, b.caption);
  EXPECT_EQ(a.image.pixels, b.image.pixels);
  EXPECT_EQ(a.image.pixels.size(), 32u * 24u * 3u);
  int different = 0;
  for (int i = 0; i < 20; ++i) {
    different += RenderShapeSample(7, i, 32, 24).caption != a.caption;
  }
  EXPECT_GT(different, 10);
}

TEST(SyntheticShapes, CaptionNamesTheColoursDrawn) {
  // "red" shape pixels (220,30,30) must appear when the caption says red shape.
  for (int i = 0; i < 50; ++i) {
    ShapeSample s = RenderShapeSample(1, i, 64, 64);
    ASSERT_TRUE(absl::StartsWith(s.caption, "a ") || absl::StartsWith(s.caption, "an orange "))
        << s.caption;
    if (!absl::StartsWith(s.caption, "a red ")) continue;
    bool found = false;
    for (size_t p = 0; p < s.image.pixels.size(); p += 3) {
      found |= s.image.pixels[p] == 220 && s.image.pixels[p + 1] == 30 &&
               s.image.pixels[p + 2] == 30;
    }
    EXPECT_TRUE(found) << s.caption;
  }
}

}  // namespace
}  // namespace dd
