// Parity of the CLIP text model with transformers on the fixture
// (reference/text_encoder_io.safetensors): all four outputs.
#include "trainer/model/clip_text_model.h"

#include <cstdlib>

#include "gtest/gtest.h"
#include "trainer/model/testing/fixtures.h"
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
