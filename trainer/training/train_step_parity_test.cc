// The training step against PyTorch: two AdamW steps of the fixture UNet on
// the fixture batch must give the same losses, gradient norms and
// parameters as diffusers + torch (see train_step_check.h for why a few
// elements with near-zero gradients may differ).
#include "gtest/gtest.h"
#include "trainer/model/testing/fixtures.h"
#include "trainer/training/train_step_check.h"

namespace dd::training {
namespace {

TEST(TrainStepParity, TwoAdamWStepsMatchPyTorch) {
  auto c = CompareTrainStep(model::testing::TinySd1() + "/model/unet",
                            model::testing::TinySd1() + "/reference");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->loss_rel_error.size(), 2u);
  for (int s = 0; s < 2; ++s) {
    EXPECT_LT(c->loss_rel_error[s], 1e-5) << "step " << s;
    EXPECT_LT(c->grad_norm_rel_error[s], 1e-4) << "step " << s;
  }
  EXPECT_LT(c->worst_param_norm_rel_error, 1e-3);
  EXPECT_GT(c->params_compared_fully, 50);
  EXPECT_EQ(c->elements_differing_with_clear_gradient, 0);
  // About 2% here: mostly the time_emb_proj weights of the 32-channel
  // blocks (one channel per GroupNorm group: exact gradient zero).
  EXPECT_LE(c->elements_differing, c->elements_compared * 3 / 100);
}

}  // namespace
}  // namespace dd::training
