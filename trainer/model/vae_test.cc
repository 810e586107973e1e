// Parity of AutoencoderKL with diffusers on the fixture (reference/vae_io).
#include "trainer/model/vae.h"

#include <cstdlib>

#include "gtest/gtest.h"
#include "trainer/model/torch_tensors.h"

namespace dd::model {
namespace {

std::string Fixtures() {
  const char* dir = std::getenv("FIXTURES_DIR");
  if (dir == nullptr) {
    ADD_FAILURE() << "FIXTURES_DIR is not set: run through tests/run_all.sh";
    return "";
  }
  return std::string(dir) + "/tiny-sd1";
}

double Rel(const at::Tensor& got, const at::Tensor& want) {
  return (got - want).abs().max().item<double>() / want.abs().max().item<double>();
}

TEST(AutoencoderKL, MatchesDiffusersOnTheFixture) {
  auto vae = AutoencoderKL::Load(Fixtures() + "/model/vae");
  ASSERT_TRUE(vae.ok()) << vae.status();
  EXPECT_DOUBLE_EQ((*vae)->scaling_factor(), 0.18215);
  auto ref = LoadTensors(Fixtures() + "/reference/vae_io.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto dist = (*vae)->Encode(ref->at("image"));
  ASSERT_TRUE(dist.ok()) << dist.status();
  EXPECT_LT(Rel(dist->mean, ref->at("latent_mean")), 1e-5);
  EXPECT_LT(Rel(dist->logvar, ref->at("latent_logvar")), 1e-5);
  EXPECT_LT(Rel(dist->std, ref->at("latent_std")), 1e-5);
  auto decoded = (*vae)->Decode(ref->at("z"));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_LT(Rel(*decoded, ref->at("decoded")), 1e-5);
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
