#include "trainer/training/vae_trainer.h"

#include <ATen/core/grad_mode.h>
#include <filesystem>
#include <fstream>

#include "common/image/image_codec.h"
#include "gtest/gtest.h"
#include "trainer/data/synthetic_shapes.h"
#include "trainer/model/diffusers_model.h"
#include "trainer/model/model_init.h"
#include "trainer/model/vae.h"

namespace dd::training {
namespace {

namespace fs = std::filesystem;

TEST(VaeTrainer, ReconstructionImprovesAndTheFolderIsComplete) {
  const std::string root = std::string(getenv("TEST_TMPDIR")) + "/vae";
  fs::remove_all(root);
  fs::create_directories(root + "/data");
  for (int i = 0; i < 32; ++i) {
    ShapeSample s = RenderShapeSample(2, i, 64, 64);
    std::ofstream(root + "/data/" + std::to_string(i) + ".png", std::ios::binary) << *EncodePng(s.image);
    std::ofstream(root + "/data/" + std::to_string(i) + ".txt") << s.caption;
  }
  ASSERT_TRUE(model::WriteInitialModel(root + "/model", "tiny", 1, ShapeVocabulary()).ok());
  VaeTrainOptions o;
  o.model_dir = root + "/model";
  o.dataset_dir = root + "/data";
  o.output_dir = root + "/trained";
  o.batch_size = 4;
  o.max_steps = 40;
  o.lr = 2e-3;
  auto r = TrainVae(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LT(r->last_loss, 0.5 * r->first_loss) << r->first_loss << " -> " << r->last_loss;
  EXPECT_TRUE(fs::exists(r->reconstructions_png));
  auto m = model::DiffusersModel::Load(o.output_dir);
  ASSERT_TRUE(m.ok()) << m.status();
  // The written scaling factor is 1/std of the latents it measured, and
  // brings freshly encoded latents close to unit variance.
  ASSERT_GT(r->latent_std, 0);
  EXPECT_DOUBLE_EQ(r->scaling_factor, 1.0 / r->latent_std);
  auto vae = model::AutoencoderKL::Load(o.output_dir + "/vae");
  ASSERT_TRUE(vae.ok());
  EXPECT_DOUBLE_EQ((*vae)->scaling_factor(), r->scaling_factor);
  {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> images;
    for (int i = 0; i < 8; ++i) {
      ShapeSample s = RenderShapeSample(2, i, 64, 64);
      images.push_back(at::from_blob(s.image.pixels.data(), {64, 64, 3}, at::kByte)
                           .permute({2, 0, 1}).to(at::kFloat).div(127.5).sub(1));
    }
    auto dist = (*vae)->Encode(at::stack(images));
    ASSERT_TRUE(dist.ok());
    const double scaled_std = (dist->mean * (*vae)->scaling_factor()).std().item<double>();
    EXPECT_GT(scaled_std, 0.5);
    EXPECT_LT(scaled_std, 2.0);
  }
  // The other parts are the original files (hard links).
  EXPECT_TRUE(fs::equivalent(o.output_dir + "/unet/diffusion_pytorch_model.safetensors",
                             o.model_dir + "/unet/diffusion_pytorch_model.safetensors"));
  o.dataset_dir = root + "/missing";
  EXPECT_EQ(TrainVae(o).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace dd::training
