#include "trainer/model/model_export.h"

#include <filesystem>

#include "gtest/gtest.h"
#include "trainer/model/diffusers_model.h"
#include "trainer/model/testing/fixtures.h"
#include "trainer/model/torch_tensors.h"

namespace dd::model {
namespace {

namespace fs = std::filesystem;

TEST(ModelExport, Fp16FolderLoadsWithTheSameWeightsToHalfPrecision) {
  const std::string root = std::string(std::getenv("TEST_TMPDIR")) + "/export";
  fs::remove_all(root);
  // A checkpoint-like folder: the fixture plus a training state and an EMA UNet.
  const std::string from = root + "/checkpoint-7";
  fs::create_directories(root);
  fs::copy(testing::TinySd1() + "/model", from, fs::copy_options::recursive);
  fs::copy(from + "/unet", from + "/unet_ema", fs::copy_options::recursive);
  auto ema = LoadTensors(from + "/unet_ema/diffusion_pytorch_model.safetensors");
  ASSERT_TRUE(ema.ok());
  for (auto& [name, t] : *ema) t = t + 1;
  ASSERT_TRUE(SaveTensors(from + "/unet_ema/diffusion_pytorch_model.safetensors", *ema).ok());
  ASSERT_TRUE(SaveTensors(from + "/training_state.safetensors", {{"x", at::ones({2})}}).ok());

  ExportOptions o;
  ASSERT_TRUE(ExportModel(from, root + "/plain", o).ok());
  EXPECT_FALSE(fs::exists(root + "/plain/training_state.safetensors"));
  EXPECT_FALSE(fs::exists(root + "/plain/unet_ema"));
  auto original = LoadTensors(from + "/unet/diffusion_pytorch_model.safetensors");
  auto exported = LoadTensors(root + "/plain/unet/diffusion_pytorch_model.safetensors");
  ASSERT_TRUE(original.ok() && exported.ok());
  ASSERT_EQ(original->size(), exported->size());
  for (const auto& [name, t] : *original) {
    ASSERT_EQ(exported->at(name).scalar_type(), at::kHalf) << name;
    EXPECT_TRUE(at::allclose(exported->at(name).to(at::kFloat), t.to(at::kFloat), 1e-3, 1e-4)) << name;
  }
  auto model = DiffusersModel::Load(root + "/plain");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_LT(fs::file_size(root + "/plain/unet/diffusion_pytorch_model.safetensors"),
            fs::file_size(from + "/unet/diffusion_pytorch_model.safetensors") * 6 / 10);

  // The EMA weights as the UNet.
  o.use_ema = true;
  o.dtype = "fp32";
  ASSERT_TRUE(ExportModel(from, root + "/ema", o).ok());
  auto as_unet = LoadTensors(root + "/ema/unet/diffusion_pytorch_model.safetensors");
  ASSERT_TRUE(as_unet.ok());
  for (const auto& [name, t] : *ema) EXPECT_TRUE(at::equal(as_unet->at(name), t)) << name;

  // Refusals leave nothing behind.
  EXPECT_EQ(ExportModel(from, root + "/ema", o).code(), absl::StatusCode::kAlreadyExists);
  o.dtype = "int4";
  EXPECT_EQ(ExportModel(from, root + "/bad", o).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(root + "/bad"));
  o.dtype = "fp16";
  EXPECT_EQ(ExportModel(root + "/plain", root + "/bad", o).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ExportModel(root + "/missing", root + "/bad2", {}).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace dd::model
