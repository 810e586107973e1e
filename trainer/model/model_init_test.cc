#include "trainer/model/model_init.h"

#include "gtest/gtest.h"
#include "trainer/model/diffusers_model.h"

namespace dd::model {
namespace {

TEST(ModelInit, TinyFolderLoadsAndRuns) {
  std::string dir = std::string(getenv("TEST_TMPDIR")) + "/tiny";
  ASSERT_TRUE(WriteInitialModel(dir, "tiny", 1, {"a", "red", "circle", "on", "blue", "background"}).ok());
  auto m = DiffusersModel::Load(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  // Listed words are one token each: BOS red circle EOS.
  std::vector<int> ids = (*m)->tokenizer->Encode("red circle");
  ASSERT_EQ(ids.size(), 4u);
  // Other text still tokenizes (byte fallback), lower-cased.
  EXPECT_GT((*m)->tokenizer->Encode("Zebra!").size(), 3u);
  std::vector<int> padded = (*m)->tokenizer->EncodePadded("a red circle");
  auto text = (*m)->text_encoder->Forward(
      at::tensor(std::vector<int64_t>(padded.begin(), padded.end())).unsqueeze(0));
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->last_hidden_state.size(2), 64);
  auto out = (*m)->unet->Forward(at::randn({1, 4, 16, 16}), at::tensor({10L}), text->last_hidden_state);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(at::isfinite(*out).all().item<bool>());
  // PyTorch's default init: norm scales 1, weights within 1/sqrt(fan_in).
  for (const auto& p : (*m)->unet->parameters()) {
    if (p.name == "conv_in.weight") {
      EXPECT_LE(p.value.abs().max().item<float>(), 1 / std::sqrt(36.0f));
    }
    if (p.name == "conv_norm_out.weight") {
      EXPECT_TRUE(at::equal(p.value, at::ones_like(p.value)));
    }
  }
  auto img = (*m)->vae->Decode(at::randn({1, 4, 16, 16}));
  ASSERT_TRUE(img.ok());
  EXPECT_EQ(img->size(2), 64);
  EXPECT_FALSE(WriteInitialModel(dir, "huge", 1, {}).ok());
  EXPECT_NE((*m)->scheduler_config_json.find("\"epsilon\""), std::string::npos);
  // v-prediction is written into the scheduler config; other types refused.
  const std::string v_dir = dir + "-v";
  ASSERT_TRUE(WriteInitialModel(v_dir, "tiny", 1, {"red"}, "v_prediction").ok());
  auto v = DiffusersModel::Load(v_dir);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_NE((*v)->scheduler_config_json.find("\"v_prediction\""), std::string::npos);
  EXPECT_EQ(WriteInitialModel(dir + "-x", "tiny", 1, {}, "sample").code(), absl::StatusCode::kInvalidArgument);
}

// tiny-sdxl: two tokenizers (the second pads with "!"), a CLIP encoder and
// a CLIPTextModelWithProjection, a text_time UNet whose cross attention
// takes both encoders' penultimate states side by side and whose added
// embedding takes the pooled projection and six size numbers.
TEST(ModelInit, TinySdxlFolderLoadsAndRuns) {
  std::string dir = std::string(getenv("TEST_TMPDIR")) + "/tiny-sdxl";
  ASSERT_TRUE(WriteInitialModel(dir, "tiny-sdxl", 1, {"a", "red", "circle"}).ok());
  auto m = DiffusersModel::Load(dir);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_NE((*m)->text_encoder_2, nullptr);
  ASSERT_NE((*m)->tokenizer_2, nullptr);
  EXPECT_EQ((*m)->pipeline_class, "StableDiffusionXLPipeline");
  EXPECT_TRUE((*m)->unet->config().text_time);
  EXPECT_NE((*m)->tokenizer_2->pad_id(), (*m)->tokenizer_2->eos_id());
  EXPECT_EQ((*m)->tokenizer_2->Encode("!")[1], (*m)->tokenizer_2->pad_id());  // pads with "!"
  std::vector<int> ids = (*m)->tokenizer->EncodePadded("a red circle");
  at::Tensor input = at::tensor(std::vector<int64_t>(ids.begin(), ids.end())).unsqueeze(0);
  auto one = (*m)->text_encoder->Forward(input);
  auto two = (*m)->text_encoder_2->Forward(input);
  ASSERT_TRUE(one.ok() && two.ok());
  ASSERT_TRUE(two->text_embeds.defined());
  EXPECT_EQ(two->text_embeds.size(1), 32);
  at::Tensor context = at::cat({one->hidden_states[one->hidden_states.size() - 2],
                                two->hidden_states[two->hidden_states.size() - 2]}, -1);
  EXPECT_EQ(context.size(2), 96);
  at::Tensor time_ids = at::tensor({64.0f, 64.0f, 0.0f, 0.0f, 64.0f, 64.0f}).unsqueeze(0);
  auto out = (*m)->unet->Forward(at::randn({1, 4, 16, 16}), at::tensor({10L}), context, two->text_embeds,
                                 time_ids);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(at::isfinite(*out).all().item<bool>());
}

}  // namespace
}  // namespace dd::model
