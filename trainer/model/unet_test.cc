// Parity of the UNet with diffusers on the fixture (reference/unet_io).
#include "trainer/model/unet.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "trainer/model/testing/fixtures.h"
#include "trainer/model/safetensors.h"
#include "trainer/model/torch_tensors.h"

namespace dd::model {
namespace {

TEST(UNet, MatchesDiffusersOnTheFixture) {
  auto unet = UNet::Load(testing::TinySd1() + "/model/unet");
  ASSERT_TRUE(unet.ok()) << unet.status();
  auto ref = LoadTensors(testing::TinySd1() + "/reference/unet_io.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto out = (*unet)->Forward(ref->at("sample"), ref->at("timestep"),
                              ref->at("encoder_hidden_states"));
  ASSERT_TRUE(out.ok()) << out.status();
  const at::Tensor& want = ref->at("output");
  double rel = (*out - want).abs().max().item<double>() / want.abs().max().item<double>();
  EXPECT_LT(rel, 1e-5) << "relative error " << rel;
}

TEST(UNet, SaveThenLoadGivesIdenticalTensorsKeysAndDtypes) {
  auto unet = UNet::Load(testing::TinySd1() + "/model/unet");
  ASSERT_TRUE(unet.ok()) << unet.status();
  std::string out = std::string(std::getenv("TEST_TMPDIR")) + "/saved_unet";
  ASSERT_TRUE((*unet)->Save(out).ok());
  auto original = SafetensorsFile::Open(testing::TinySd1() + "/model/unet/diffusion_pytorch_model.safetensors");
  auto saved = SafetensorsFile::Open(out + "/diffusion_pytorch_model.safetensors");
  ASSERT_TRUE(original.ok() && saved.ok());
  ASSERT_EQ((*saved)->tensors().size(), (*original)->tensors().size());
  for (const auto& t : (*original)->tensors()) {
    auto s = (*saved)->Find(t.name);
    ASSERT_TRUE(s.ok()) << t.name;
    EXPECT_EQ((*s)->dtype, t.dtype) << t.name;
    EXPECT_EQ((*s)->shape, t.shape) << t.name;
    ASSERT_EQ(std::memcmp((*s)->data, t.data, t.nbytes), 0) << t.name;
  }
  auto reloaded = UNet::Load(out);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ((*reloaded)->parameters().size(), (*unet)->parameters().size());
}

TEST(UNet, ShardedCheckpointsLoadLikeSingleFiles) {
  // Split the fixture's UNet into two shards with an index, as large
  // checkpoints come from the hub.
  auto file = SafetensorsFile::Open(testing::TinySd1() + "/model/unet/diffusion_pytorch_model.safetensors");
  ASSERT_TRUE(file.ok());
  std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/sharded";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(testing::TinySd1() + "/model/unet/config.json", dir + "/config.json",
                             std::filesystem::copy_options::overwrite_existing);
  std::vector<TensorToWrite> shard[2];
  std::string index = "{\"weight_map\": {";
  for (size_t i = 0; i < (*file)->tensors().size(); ++i) {
    const auto& t = (*file)->tensors()[i];
    shard[i % 2].push_back({t.name, t.dtype, t.shape,
                            std::string(reinterpret_cast<const char*>(t.data), t.nbytes)});
    index += (i ? ", \"" : "\"") + t.name + "\": \"part-" + std::to_string(i % 2) + ".safetensors\"";
  }
  index += "}}";
  ASSERT_TRUE(WriteSafetensors(dir + "/part-0.safetensors", shard[0]).ok());
  ASSERT_TRUE(WriteSafetensors(dir + "/part-1.safetensors", shard[1]).ok());
  std::ofstream(dir + "/diffusion_pytorch_model.safetensors.index.json") << index;
  auto sharded = UNet::Load(dir);
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  auto ref = LoadTensors(testing::TinySd1() + "/reference/unet_io.safetensors");
  auto out = (*sharded)->Forward(ref->at("sample"), ref->at("timestep"), ref->at("encoder_hidden_states"));
  ASSERT_TRUE(out.ok());
  EXPECT_LT((*out - ref->at("output")).abs().max().item<double>(), 1e-4);
  // An index that points a tensor at the wrong shard is refused by name.
  std::string wrong = index;
  size_t at = wrong.find("part-0");
  wrong.replace(at, 6, "part-1");
  std::ofstream(dir + "/diffusion_pytorch_model.safetensors.index.json") << wrong;
  auto bad = UNet::Load(dir);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("does not hold it"), absl::string_view::npos);
}

TEST(UNet, RefusesUnsupportedConfigsAndBadInputs) {
  auto sdxl = ParseUNetConfig(R"({"addition_embed_type": "text_time", "down_block_types": [],
                                  "up_block_types": []})", "config.json");
  EXPECT_EQ(sdxl.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(sdxl.status().message().find("addition_embed_type"), absl::string_view::npos);
  auto unet = UNet::Load(testing::TinySd1() + "/model/unet");
  ASSERT_TRUE(unet.ok());
  EXPECT_EQ((*unet)->Forward(at::zeros({1, 3, 16, 16}), at::zeros({1}), at::zeros({1, 77, 32}))
                .status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*unet)->Forward(at::zeros({1, 4, 15, 16}), at::zeros({1}), at::zeros({1, 77, 32}))
                .status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*unet)->Forward(at::zeros({1, 4, 16, 16}), at::zeros({1}), at::zeros({1, 77, 31}))
                .status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dd::model
