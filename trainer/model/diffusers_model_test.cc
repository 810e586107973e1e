#include "trainer/model/diffusers_model.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "trainer/model/testing/fixtures.h"

namespace dd::model {
namespace {

TEST(DiffusersModel, LoadsEveryPartOfTheFixtureFolder) {
  auto model = DiffusersModel::Load(testing::TinySd1() + "/model");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->pipeline_class, "StableDiffusionPipeline");
  EXPECT_NE((*model)->scheduler_config_json.find("DDIMScheduler"), std::string::npos);
  EXPECT_EQ((*model)->unet->config().cross_attention_dim,
            (*model)->text_encoder->config().hidden_size);
  EXPECT_DOUBLE_EQ((*model)->vae->scaling_factor(), 0.18215);
}

TEST(DiffusersModel, MissingAndUnsupportedPartsAreNamed) {
  std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/model";
  std::filesystem::remove_all(dir);
  std::filesystem::copy(testing::TinySd1() + "/model", dir, std::filesystem::copy_options::recursive);
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::add);
  for (auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    std::filesystem::permissions(e.path(), std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::add);
  }
  std::filesystem::remove_all(dir + "/vae");
  auto missing = DiffusersModel::Load(dir);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("vae"), absl::string_view::npos) << missing.status();
  std::ofstream(dir + "/model_index.json")
      << R"({"_class_name": "StableDiffusionXLPipeline",
            "text_encoder_2": ["transformers", "T5EncoderModel"]})";
  auto other = DiffusersModel::Load(dir);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(other.status().message().find("text_encoder_2"), absl::string_view::npos);
  EXPECT_EQ(DiffusersModel::Load("/nonexistent").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace dd::model
