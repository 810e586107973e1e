#include <cmath>

#include "gtest/gtest.h"
#include "trainer/diffusion/schedulers.h"
#include "trainer/training/diffusion_loss.h"
#include "trainer/training/ema.h"
#include "trainer/training/gradients.h"

namespace dd::training {
namespace {

TEST(Gradients, NormAndClipLikeTorch) {
  std::vector<at::Tensor> g = {at::tensor({3.0f}), at::Tensor(), at::tensor({4.0f, 0.0f})};
  EXPECT_DOUBLE_EQ(GlobalNorm(g), 5.0);
  EXPECT_DOUBLE_EQ(ClipGradNorm(g, 1.0), 5.0);
  EXPECT_NEAR(g[0].item<float>(), 3.0 / (5 + 1e-6), 1e-6);
  EXPECT_NEAR(GlobalNorm(g), 1.0, 1e-6);
  std::vector<at::Tensor> small = {at::tensor({0.1f})};
  ClipGradNorm(small, 1.0);
  EXPECT_FLOAT_EQ(small[0].item<float>(), 0.1f);
  std::vector<at::Tensor> bad = {at::tensor({NAN})};
  EXPECT_FALSE(std::isfinite(ClipGradNorm(bad, 1.0)));
}

TEST(Ema, WarmupDecayAndAverage) {
  at::Tensor w = at::zeros({2});
  std::vector<NamedTensor> params = {{"w", w}};
  Ema ema(params, 0.5);
  w.fill_(4);
  EXPECT_EQ(ema.CurrentDecay(), 0.0);  // first update copies
  ema.Update(params);
  EXPECT_FLOAT_EQ(ema.shadow()[0][0].item<float>(), 4);
  EXPECT_NEAR(ema.CurrentDecay(), 2.0 / 11, 1e-12);
  w.fill_(15);
  ema.Update(params);  // 4 + (1 - 2/11) * 11 = 13
  EXPECT_NEAR(ema.shadow()[0][0].item<float>(), 13, 1e-5);
  for (int i = 0; i < 50; ++i) ema.Update(params);
  EXPECT_DOUBLE_EQ(ema.CurrentDecay(), 0.5);  // capped
  Ema other(params, 0.5);
  ASSERT_TRUE(other.ImportState(params, ema.ExportState(params)).ok());
  EXPECT_EQ(other.updates(), ema.updates());
  EXPECT_TRUE(at::equal(other.shadow()[0], ema.shadow()[0]));
}

TEST(MinSnr, WeightsFollowTheDefinition) {
  diffusion::ScheduleConfig c;
  diffusion::NoiseSchedule s(c);
  at::Tensor t = at::tensor({0L, 500L, 999L});
  at::Tensor w = MinSnrWeights(s, t, 5.0);
  for (int i = 0; i < 3; ++i) {
    double a = s.alphas_cumprod()[t[i].item<int64_t>()].item<double>();
    double snr = a / (1 - a);
    EXPECT_NEAR(w[i].item<double>(), std::min(snr, 5.0) / snr, 1e-5);
  }
  EXPECT_LT(w[0].item<float>(), 0.1f);  // low-noise steps are down-weighted
  EXPECT_FLOAT_EQ(w[2].item<float>(), 1.0f);
}

}  // namespace
}  // namespace dd::training

#include "trainer/training/loss_scaler.h"

namespace dd::training {
namespace {

TEST(LossScaler, BacksOffOnInfAndGrows) {
  LossScaler s(1024, 3);
  std::vector<at::Tensor> g = {at::tensor({2048.0f})};
  EXPECT_TRUE(s.Unscale(g));
  EXPECT_FLOAT_EQ(g[0].item<float>(), 2.0f);
  std::vector<at::Tensor> bad = {at::tensor({INFINITY})};
  EXPECT_FALSE(s.Unscale(bad));
  s.Update(true);
  EXPECT_EQ(s.scale(), 512);
  for (int i = 0; i < 3; ++i) s.Update(false);
  EXPECT_EQ(s.scale(), 1024);
  EXPECT_EQ(s.clean_steps(), 0);
}

}  // namespace
}  // namespace dd::training
