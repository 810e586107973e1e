#include "trainer/collab/outer_optimizer.h"

#include <cmath>
#include <cstring>

#include "gtest/gtest.h"

namespace dd::collab {
namespace {

TEST(OuterOptimizerTest, PseudoGradientIsGlobalMinusLocal) {
  OuterOptimizer opt({1.0f, 2.0f, -3.0f}, OuterOptions{});
  const float local[] = {0.5f, 2.5f, -3.0f};
  float delta[3];
  opt.PseudoGradient(local, delta);
  EXPECT_FLOAT_EQ(delta[0], 0.5f);
  EXPECT_FLOAT_EQ(delta[1], -0.5f);
  EXPECT_FLOAT_EQ(delta[2], 0.0f);
}

// torch.optim.SGD(lr, momentum, nesterov=True), in closed form for a
// constant pseudo-gradient g: m1 = g, m2 = (1+mu) g;
// θ1 = θ0 - lr (g + mu g), θ2 = θ1 - lr (g + mu (1+mu) g).
TEST(OuterOptimizerTest, NesterovStepsMatchTheClosedForm) {
  OuterOptions o;
  o.lr = 0.7;
  o.momentum = 0.9;
  OuterOptimizer opt({10.0f}, o);
  const float g[] = {2.0f};
  ASSERT_TRUE(opt.Step(g).ok());
  EXPECT_NEAR(opt.global()[0], 10.0 - 0.7 * (2.0 + 0.9 * 2.0), 1e-5);
  EXPECT_NEAR(opt.momentum()[0], 2.0, 1e-6);
  ASSERT_TRUE(opt.Step(g).ok());
  EXPECT_NEAR(opt.momentum()[0], 2.0 * 1.9, 1e-5);
  EXPECT_NEAR(opt.global()[0], 10.0 - 0.7 * 3.8 - 0.7 * (2.0 + 0.9 * 3.8), 1e-4);
}

TEST(OuterOptimizerTest, PlainMomentumAndUnitLrWithoutMomentumIsFedAvg) {
  OuterOptions o;
  o.lr = 1.0;
  o.momentum = 0.0;
  OuterOptimizer opt({1.0f, 1.0f}, o);
  // With lr 1 and no momentum the outer step moves θ to the mean of the
  // local weights: FedAvg / local SGD.
  const float local_mean[] = {0.25f, 1.5f};
  float delta[2];
  opt.PseudoGradient(local_mean, delta);
  ASSERT_TRUE(opt.Step(delta).ok());
  EXPECT_FLOAT_EQ(opt.global()[0], 0.25f);
  EXPECT_FLOAT_EQ(opt.global()[1], 1.5f);

  o.lr = 0.5;
  o.momentum = 0.5;
  o.nesterov = false;
  OuterOptimizer heavy_ball({0.0f}, o);
  const float g[] = {1.0f};
  ASSERT_TRUE(heavy_ball.Step(g).ok());  // m = 1, θ = -0.5
  ASSERT_TRUE(heavy_ball.Step(g).ok());  // m = 1.5, θ = -1.25
  EXPECT_FLOAT_EQ(heavy_ball.global()[0], -1.25f);
}

TEST(OuterOptimizerTest, TwoInstancesFedTheSameAveragesStayBitIdentical) {
  std::vector<float> start(1000);
  for (size_t i = 0; i < start.size(); ++i) start[i] = std::sin(0.37 * i);
  OuterOptimizer a(start, OuterOptions{}), b(start, OuterOptions{});
  std::vector<float> mean(start.size());
  for (int step = 0; step < 20; ++step) {
    for (size_t i = 0; i < mean.size(); ++i) mean[i] = 1e-3f * std::cos(0.11 * i * (step + 1));
    ASSERT_TRUE(a.Step(mean.data()).ok());
    ASSERT_TRUE(b.Step(mean.data()).ok());
  }
  EXPECT_EQ(0, std::memcmp(a.global().data(), b.global().data(), start.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(a.momentum().data(), b.momentum().data(), start.size() * sizeof(float)));
}

TEST(OuterOptimizerTest, NonFiniteAveragesAndBadRestoresChangeNothing) {
  OuterOptimizer opt({1.0f, 2.0f}, OuterOptions{});
  const float bad[] = {0.1f, NAN};
  EXPECT_EQ(opt.Step(bad).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(opt.global(), (std::vector<float>{1.0f, 2.0f}));
  EXPECT_EQ(opt.momentum(), (std::vector<float>{0.0f, 0.0f}));
  EXPECT_EQ(opt.Restore({1.0f}, {0.0f}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(opt.Restore({1.0f, INFINITY}, {0.0f, 0.0f}).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(opt.Restore({3.0f, 4.0f}, {0.5f, 0.25f}).ok());
  EXPECT_EQ(opt.global(), (std::vector<float>{3.0f, 4.0f}));
  EXPECT_EQ(opt.momentum(), (std::vector<float>{0.5f, 0.25f}));
}

// The step prepared beside the local steps (StepInto, then Adopt) is the
// in-place step, bit for bit, over a vector long enough to run on several
// threads.
TEST(OuterOptimizerTest, AStepPreparedAsideIsBitIdenticalToTheStepInPlace) {
  const size_t n = (size_t{1} << 20) + 13;
  std::vector<float> start(n), mean(n);
  for (size_t i = 0; i < n; ++i) {
    start[i] = std::sin(0.001f * i);
    mean[i] = 1e-3f * std::cos(0.0007f * i);
  }
  OuterOptions o;
  OuterOptimizer in_place(start, o), aside(start, o);
  std::vector<float> global, momentum;
  for (int k = 0; k < 2; ++k) {  // the second step reuses the returned buffers
    const std::vector<float> before = aside.global();
    ASSERT_TRUE(in_place.Step(mean.data()).ok());
    ASSERT_TRUE(aside.StepInto(mean.data(), &global, &momentum).ok());
    EXPECT_EQ(aside.global(), before);  // unchanged until adopted
    ASSERT_TRUE(aside.Adopt(&global, &momentum).ok());
    EXPECT_EQ(global, before);  // the previous state comes back for reuse
    EXPECT_EQ(aside.global(), in_place.global()) << k;
    EXPECT_EQ(aside.momentum(), in_place.momentum()) << k;
  }
  std::vector<float> wrong(3);
  EXPECT_EQ(aside.Adopt(&wrong, &momentum).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ErrorFeedbackTest, WhatTheCodecDroppedJoinsTheNextContribution) {
  ErrorFeedback ef(2);
  float delta[] = {1.0f, -2.0f};
  ef.AddTo(delta);  // nothing yet
  EXPECT_FLOAT_EQ(delta[0], 1.0f);
  const float sent[] = {0.75f, -2.0f};  // a lossy codec kept 0.75 of 1.0
  for (int i = 0; i < 2; ++i) ef.data()[i] = delta[i] - sent[i];  // as the round writes it
  EXPECT_FLOAT_EQ(ef.residual()[0], 0.25f);
  EXPECT_FLOAT_EQ(ef.residual()[1], 0.0f);
  float next[] = {0.5f, 0.5f};
  ef.AddTo(next);
  EXPECT_FLOAT_EQ(next[0], 0.75f);
  EXPECT_FLOAT_EQ(next[1], 0.5f);
  ef.Reset();
  EXPECT_FLOAT_EQ(ef.residual()[0], 0.0f);
}

}  // namespace
}  // namespace dd::collab
