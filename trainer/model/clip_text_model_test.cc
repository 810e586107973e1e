// Parity of the CLIP text model with transformers on the fixture
// (reference/text_encoder_io.safetensors): all four outputs.
#include "trainer/model/clip_text_model.h"

#include <ATen/core/grad_mode.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "trainer/model/testing/fixtures.h"
#include "trainer/model/safetensors.h"
#include "trainer/model/torch_tensors.h"

namespace dd::model {
namespace {

TEST(ClipTextModel, MatchesTransformersOnTheFixture) {
  auto model = ClipTextModel::Load(testing::TinySd1() + "/model/text_encoder");
  ASSERT_TRUE(model.ok()) << model.status();
  auto ref = LoadTensors(testing::TinySd1() + "/reference/text_encoder_io.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto out = (*model)->Forward(ref->at("input_ids"));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_LT(testing::RelativeError(out->last_hidden_state, ref->at("last_hidden_state")), 1e-5);
  EXPECT_LT(testing::RelativeError(out->hidden_states[out->hidden_states.size() - 2],
                          ref->at("penultimate_hidden_state")),
            1e-5);
  EXPECT_LT(testing::RelativeError(out->Normed(2), ref->at("penultimate_normed")), 1e-5);
  EXPECT_LT(testing::RelativeError(out->pooled, ref->at("pooler_output")), 1e-5);
}

TEST(ClipTextModel, ParametersTrainAndSaveRoundTrips) {
  auto model = ClipTextModel::Load(testing::TinySd1() + "/model/text_encoder");
  ASSERT_TRUE(model.ok()) << model.status();
  const auto& params = (*model)->parameters();
  auto file = LoadTensors(testing::TinySd1() + "/model/text_encoder/model.safetensors");
  ASSERT_TRUE(file.ok());
  // Every tensor Forward uses is exposed, under its name in the file
  // (the fixture has no text_projection, so every file tensor but
  // position_ids, a buffer).
  size_t weights_in_file = 0;
  for (const auto& [name, t] : *file) weights_in_file += name.find("position_ids") == std::string::npos;
  EXPECT_EQ(params.size(), weights_in_file);
  for (const auto& p : params) {
    ASSERT_TRUE(file->count(p.name)) << p.name;
    EXPECT_TRUE(at::equal(p.value, file->at(p.name).to(at::kFloat))) << p.name;
    p.value.requires_grad_(true);
  }
  // Gradients reach every parameter through Forward.
  auto ref = LoadTensors(testing::TinySd1() + "/reference/text_encoder_io.safetensors");
  ASSERT_TRUE(ref.ok());
  auto out = (*model)->Forward(ref->at("input_ids"));
  ASSERT_TRUE(out.ok());
  out->last_hidden_state.pow(2).sum().backward();
  for (const auto& p : params) {
    ASSERT_TRUE(p.value.grad().defined()) << p.name;
    EXPECT_GT(p.value.grad().abs().sum().item<double>(), 0) << p.name;
  }
  // Changed weights are what Save writes; a reload sees them.
  {
    at::NoGradGuard no_grad;
    for (const auto& p : params) p.value.add_(0.25);
  }
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/saved_text_encoder";
  ASSERT_TRUE((*model)->Save(dir).ok());
  auto again = ClipTextModel::Load(dir);
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_EQ((*again)->parameters().size(), params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ((*again)->parameters()[i].name, params[i].name);
    EXPECT_TRUE(at::equal((*again)->parameters()[i].value, params[i].value.detach())) << params[i].name;
  }
}

TEST(ClipTextModel, WithProjectionProjectsThePooledOutput) {
  // SDXL's second encoder is the same network plus text_projection: build one
  // from the fixture by adding a projection and check text_embeds = pooled W^T.
  std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/te2";
  std::filesystem::create_directories(dir);
  auto file = SafetensorsFile::Open(testing::TinySd1() + "/model/text_encoder/model.safetensors");
  ASSERT_TRUE(file.ok());
  std::vector<TensorToWrite> tensors;
  for (const auto& t : (*file)->tensors()) {
    tensors.push_back({"text_model." + t.name, t.dtype, t.shape,
                       std::string(reinterpret_cast<const char*>(t.data), t.nbytes)});
  }
  at::Tensor w = at::randn({16, 32});
  tensors.push_back({"text_projection.weight", DType::kF32, {16, 32},
                     std::string(static_cast<const char*>(w.data_ptr()), w.nbytes())});
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors).ok());
  std::ifstream in(testing::TinySd1() + "/model/text_encoder/config.json");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string config = ss.str();
  config.replace(config.find("\"CLIPTextModel\""), 15, "\"CLIPTextModelWithProjection\"");
  config.replace(config.find("\"projection_dim\": 32"), 20, "\"projection_dim\": 16");
  std::ofstream(dir + "/config.json") << config;
  auto model = ClipTextModel::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_TRUE((*model)->config().with_projection);
  auto ids = at::tensor({2012, 320, 2013}, at::kLong).view({1, 3});
  auto out = (*model)->Forward(ids);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(at::allclose(out->text_embeds, at::linear(out->pooled, w)));
}

TEST(ClipTextModel, BadInputAndBadConfigAreClearErrors) {
  auto model = ClipTextModel::Load(testing::TinySd1() + "/model/text_encoder");
  ASSERT_TRUE(model.ok());
  EXPECT_EQ((*model)->Forward(at::zeros({1, 78}, at::kLong)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*model)->Forward(at::full({1, 3}, 5000, at::kLong)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*model)->Forward(at::zeros({1, 3}, at::kFloat)).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto bad = ParseClipTextConfig(R"({"hidden_act": "swish"})", "config.json");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("hidden_act"), absl::string_view::npos);
  EXPECT_FALSE(ParseClipTextConfig(R"({"hidden_size": 30, "num_attention_heads": 4})", "c").ok());
  EXPECT_EQ(ClipTextModel::Load("/nonexistent").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace dd::model
