// Parity of AutoencoderKL with diffusers on the fixture (reference/vae_io).
#include "trainer/model/vae.h"

#include <cstdlib>

#include "gtest/gtest.h"
#include "trainer/model/testing/fixtures.h"
#include "trainer/model/torch_tensors.h"

namespace dd::model {
namespace {

TEST(AutoencoderKL, MatchesDiffusersOnTheFixture) {
  auto vae = AutoencoderKL::Load(testing::TinySd1() + "/model/vae");
  ASSERT_TRUE(vae.ok()) << vae.status();
  EXPECT_DOUBLE_EQ((*vae)->scaling_factor(), 0.18215);
  auto ref = LoadTensors(testing::TinySd1() + "/reference/vae_io.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto dist = (*vae)->Encode(ref->at("image"));
  ASSERT_TRUE(dist.ok()) << dist.status();
  EXPECT_LT(testing::RelativeError(dist->mean, ref->at("latent_mean")), 1e-5);
  EXPECT_LT(testing::RelativeError(dist->logvar, ref->at("latent_logvar")), 1e-5);
  EXPECT_LT(testing::RelativeError(dist->std, ref->at("latent_std")), 1e-5);
  auto decoded = (*vae)->Decode(ref->at("z"));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_LT(testing::RelativeError(*decoded, ref->at("decoded")), 1e-5);
  // Sampling with a seeded generator is reproducible.
  at::Tensor a = dist->Sample(at::detail::createCPUGenerator(42));
  at::Tensor b = dist->Sample(at::detail::createCPUGenerator(42));
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_EQ((*vae)->Encode(at::zeros({1, 3, 31, 32})).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*vae)->Decode(at::zeros({1, 3, 8, 8})).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dd::model
