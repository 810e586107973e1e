#include "trainer/data/captions.h"

#include "gtest/gtest.h"

namespace dd::data {
namespace {

TEST(Captions, DropoutRateAndDeterminism) {
  CaptionOptions o;
  o.dropout = 0.1;
  int dropped = 0;
  for (int i = 0; i < 10000; ++i) {
    SplitMix a(5, i), b(5, i);
    std::string x = AugmentCaption("a cat", o, a);
    EXPECT_EQ(x, AugmentCaption("a cat", o, b));
    dropped += x.empty();
  }
  EXPECT_NEAR(dropped, 1000, 120);
}

TEST(Captions, ShuffleKeepsLeadingTagsAndEveryTag) {
  CaptionOptions o;
  o.shuffle_tags = true;
  o.keep_tags = 1;
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    SplitMix rng(1, i);
    std::string s = AugmentCaption("masterpiece, a, b ,c,  d", o, rng);
    ASSERT_EQ(s.rfind("masterpiece, ", 0), 0u) << s;
    std::string sorted = s;
    std::sort(sorted.begin(), sorted.end());
    std::string want = "masterpiece, a, b, c, d";
    std::sort(want.begin(), want.end());
    EXPECT_EQ(sorted, want);
    seen.insert(s);
  }
  EXPECT_EQ(seen.size(), 24u);  // 4! orders of the shuffled tags
  o.shuffle_tags = false;
  SplitMix rng(1, 1);
  EXPECT_EQ(AugmentCaption("x, y", o, rng), "x, y");
}

}  // namespace
}  // namespace dd::data
