#include "trainer/pipeline/txt2img.h"

#include "gtest/gtest.h"
#include "trainer/model/testing/fixtures.h"
#include "trainer/model/torch_tensors.h"

namespace dd::pipeline {
namespace {

using model::testing::RelativeError;
using model::testing::TinySd1;

class Txt2ImgTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = model::DiffusersModel::Load(TinySd1() + "/model");
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
  }
  std::unique_ptr<model::DiffusersModel> model_;
};

TEST_F(Txt2ImgTest, MatchesDiffusersPipeline) {
  auto ref = model::LoadTensors(TinySd1() + "/reference/pipeline_io.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto pipe = Txt2ImgPipeline::Create(model_.get());
  ASSERT_TRUE(pipe.ok());
  Txt2ImgOptions o;
  o.prompt = "a red circle on a blue background";
  o.steps = 10;
  o.guidance = 7.5;
  o.initial_latents = ref->at("latents");
  int steps_seen = 0;
  o.on_step = [&](int step, int total) {
    EXPECT_EQ(total, 10);
    steps_seen = step;
  };
  auto image = pipe->Generate(o);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(steps_seen, 10);
  at::Tensor want = ref->at("image")[0];
  ASSERT_EQ(image->sizes(), want.sizes());
  EXPECT_LT(RelativeError(*image, want), 1e-4);
}

TEST_F(Txt2ImgTest, SeedsAreReproducibleAndSizesChecked) {
  auto pipe = *Txt2ImgPipeline::Create(model_.get());
  EXPECT_EQ(pipe.default_size(), 32);
  Txt2ImgOptions o;
  o.prompt = "a green square";
  o.steps = 3;
  o.seed = 4;
  o.sampler = "euler";
  auto a = pipe.Generate(o), b = pipe.Generate(o);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(at::equal(*a, *b));
  o.seed = 5;
  EXPECT_FALSE(at::equal(*a, *pipe.Generate(o)));
  o.width = 44;  // VAE scale 2 x UNet 4: sides must be multiples of 8
  EXPECT_EQ(pipe.Generate(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.width = 64;
  o.height = 32;
  auto wide = pipe.Generate(o);
  ASSERT_TRUE(wide.ok());
  EXPECT_EQ(wide->size(1), 64);
  o.steps = 0;
  EXPECT_FALSE(pipe.Generate(o).ok());
  o.steps = 2;
  o.sampler = "plms";
  EXPECT_FALSE(pipe.Generate(o).ok());
}

TEST(Grid, TilesImages) {
  RgbImage a{1, 1, {1, 2, 3}}, b{1, 1, {4, 5, 6}}, c{1, 1, {7, 8, 9}};
  auto g = MakeGrid({a, b, c}, 2);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->width, 2);
  EXPECT_EQ(g->height, 2);
  EXPECT_EQ(g->pixels, (std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0, 0}));
  RgbImage big{2, 1, {0, 0, 0, 0, 0, 0}};
  EXPECT_FALSE(MakeGrid({a, big}, 2).ok());
  auto rgb = ToRgbImage(at::full({1, 2, 3}, 0.5));
  ASSERT_TRUE(rgb.ok());
  EXPECT_EQ(rgb->pixels[0], 128);
}

}  // namespace
}  // namespace dd::pipeline
