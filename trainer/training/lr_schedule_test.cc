#include "trainer/training/lr_schedule.h"

#include <cmath>

#include "gtest/gtest.h"

namespace dd::training {
namespace {

LrSchedule Make(const std::string& name, int64_t warmup, int64_t total) {
  LrScheduleOptions o;
  o.name = name;
  o.warmup_steps = warmup;
  o.total_steps = total;
  auto s = LrSchedule::Make(1e-3, o);
  EXPECT_TRUE(s.ok()) << s.status();
  return *s;
}

// Values from diffusers.optimization.get_scheduler's formulas.
TEST(LrSchedule, MatchesDiffusersFormulas) {
  EXPECT_DOUBLE_EQ(Make("constant", 5, 0).At(0), 1e-3);
  LrSchedule w = Make("constant_with_warmup", 4, 0);
  EXPECT_DOUBLE_EQ(w.At(0), 0);
  EXPECT_DOUBLE_EQ(w.At(2), 0.5e-3);
  EXPECT_DOUBLE_EQ(w.At(4), 1e-3);
  EXPECT_DOUBLE_EQ(w.At(400), 1e-3);
  LrSchedule lin = Make("linear", 10, 110);
  EXPECT_DOUBLE_EQ(lin.At(5), 0.5e-3);
  EXPECT_DOUBLE_EQ(lin.At(10), 1e-3);
  EXPECT_DOUBLE_EQ(lin.At(60), 0.5e-3);
  EXPECT_DOUBLE_EQ(lin.At(110), 0);
  EXPECT_DOUBLE_EQ(lin.At(200), 0);
  LrSchedule cos = Make("cosine", 0, 100);
  EXPECT_DOUBLE_EQ(cos.At(0), 1e-3);
  EXPECT_NEAR(cos.At(50), 0.5e-3, 1e-15);
  EXPECT_NEAR(cos.At(100), 0, 1e-15);
  EXPECT_NEAR(cos.At(150), 0, 1e-15);  // held at its end, not back up the cosine
  EXPECT_NEAR(cos.At(25), 1e-3 * 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-15);
  LrSchedule poly = Make("polynomial", 0, 100);
  EXPECT_NEAR(poly.At(50), (1e-3 - 1e-7) * 0.5 + 1e-7, 1e-15);
  EXPECT_DOUBLE_EQ(poly.At(150), 1e-7);
}

TEST(LrSchedule, RefusesBadOptions) {
  LrScheduleOptions o;
  o.name = "cyclic";
  EXPECT_FALSE(LrSchedule::Make(1e-3, o).ok());
  o.name = "cosine";
  EXPECT_FALSE(LrSchedule::Make(1e-3, o).ok());  // no total
  o.total_steps = 10;
  EXPECT_TRUE(LrSchedule::Make(1e-3, o).ok());
  EXPECT_FALSE(LrSchedule::Make(-1, o).ok());
  EXPECT_FALSE(LrSchedule::Make(NAN, o).ok());
}

}  // namespace
}  // namespace dd::training
