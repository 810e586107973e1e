#include "trainer/training/optimizer.h"

#include "gtest/gtest.h"

namespace dd::training {
namespace {

// Adam on f(x) = sum((x - target)^2) must approach target; 8-bit Adam must
// track full-precision Adam closely.
TEST(Optimizer, AdamWAndEightBitConvergeAlike) {
  at::manual_seed(3);
  at::Tensor target = at::randn({5000});
  at::Tensor a = at::zeros({5000}), b = at::zeros({5000});
  AdamWOptions o;
  o.weight_decay = 0;
  auto full = *MakeAdamW({{"w", a}}, o);
  auto q = *MakeAdamW8bit({{"w", b}}, o);
  for (int i = 0; i < 600; ++i) {
    const double lr = i < 400 ? 0.05 : 0.005;
    ASSERT_TRUE(full->Step({2 * (a - target)}, lr).ok());
    ASSERT_TRUE(q->Step({2 * (b - target)}, lr).ok());
  }
  EXPECT_LT((a - target).abs().max().item<float>(), 0.05);
  EXPECT_LT((b - target).abs().max().item<float>(), 0.1);
  EXPECT_LT((a - b).abs().mean().item<float>(), 0.02);
  // The 8-bit state is about a quarter of AdamW's.
  EXPECT_EQ(full->StateBytes(), 5000 * 8);
  EXPECT_LT(q->StateBytes(), 5000 * 8 / 3);
}

TEST(Optimizer, FirstStepMatchesClosedForm) {
  // Step 1 of AdamW: p -= lr * wd * p, then p -= lr * g / (|g| + eps) = lr * sign(g).
  at::Tensor p = at::tensor({1.0f, -2.0f, 3.0f});
  auto opt = *MakeAdamW({{"p", p}}, AdamWOptions{0.9, 0.999, 1e-8, 0.1});
  ASSERT_TRUE(opt->Step({at::tensor({0.5f, -4.0f, 0.0f})}, 0.01).ok());
  EXPECT_NEAR(p[0].item<float>(), 1.0 * (1 - 0.001) - 0.01, 1e-6);
  EXPECT_NEAR(p[1].item<float>(), -2.0 * (1 - 0.001) + 0.01, 1e-6);
  EXPECT_NEAR(p[2].item<float>(), 3.0 * (1 - 0.001), 1e-6);
}

TEST(Optimizer, StateRoundTripsExactly) {
  for (bool eight : {false, true}) {
    at::manual_seed(1);
    at::Tensor p1 = at::randn({100}), p2 = p1.clone();
    auto make = [&](at::Tensor p) { return eight ? *MakeAdamW8bit({{"p", p}}, {}) : *MakeAdamW({{"p", p}}, {}); };
    auto a = make(p1);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(a->Step({at::sin(p1 * (i + 1))}, 0.01).ok());
    auto b = make(p2);
    p2.copy_(p1);
    ASSERT_TRUE(b->ImportState(a->ExportState()).ok());
    EXPECT_EQ(b->steps(), 3);
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(a->Step({at::cos(p1)}, 0.01).ok());
      ASSERT_TRUE(b->Step({at::cos(p2)}, 0.01).ok());
    }
    EXPECT_TRUE(at::equal(p1, p2)) << eight;
  }
}

TEST(Optimizer, RefusesBadInput) {
  at::Tensor p = at::zeros({4});
  auto opt = *MakeAdamW({{"p", p}}, {});
  EXPECT_FALSE(opt->Step({at::zeros({5})}, 0.1).ok());
  EXPECT_FALSE(opt->Step({}, 0.1).ok());
  EXPECT_TRUE(opt->Step({at::Tensor()}, 0.1).ok());  // no gradient: untouched
  auto state = opt->ExportState();
  state.erase("p.exp_avg");
  EXPECT_FALSE(opt->ImportState(state).ok());
  EXPECT_FALSE(MakeAdamW({{"i", at::zeros({2}, at::kLong)}}, {}).ok());
  AdamWOptions bad;
  bad.beta1 = 1.0;
  EXPECT_FALSE(MakeAdamW({{"p", p}}, bad).ok());
}

}  // namespace
}  // namespace dd::training
