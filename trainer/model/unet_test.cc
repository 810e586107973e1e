// Parity of the UNet with diffusers on the fixture (reference/unet_io).
#include "trainer/model/unet.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "trainer/model/testing/fixtures.h"
#include "trainer/model/safetensors.h"
#include "trainer/model/torch_compat.h"
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

// A part holding only a variant's weights (a Hub download of --hf_variant
// fp16) loads from it; two variants are ambiguous.
TEST(UNet, AFolderWithOnlyAVariantLoadsIt) {
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/variant";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(testing::TinySd1() + "/model/unet/config.json", dir + "/config.json");
  std::filesystem::copy_file(testing::TinySd1() + "/model/unet/diffusion_pytorch_model.safetensors",
                             dir + "/diffusion_pytorch_model.fp16.safetensors");
  auto unet = UNet::Load(dir);
  ASSERT_TRUE(unet.ok()) << unet.status();
  std::filesystem::copy_file(dir + "/diffusion_pytorch_model.fp16.safetensors",
                             dir + "/diffusion_pytorch_model.bf16.safetensors");
  EXPECT_EQ(UNet::Load(dir).status().code(), absl::StatusCode::kInvalidArgument);
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

TEST(UNet, SdxlTextTimeConditioningIsUsedAndChecked) {
  // An SDXL-shaped miniature (no reference outputs exist for it here): the
  // added conditioning must be required, size-checked and must matter.
  auto config = ParseUNetConfig(R"({
      "block_out_channels": [32, 64], "layers_per_block": 1,
      "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
      "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
      "attention_head_dim": [2, 4], "transformer_layers_per_block": [1, 2],
      "use_linear_projection": true, "cross_attention_dim": 16,
      "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
      "projection_class_embeddings_input_dim": 60})", "sdxl.json");
  ASSERT_TRUE(config.ok()) << config.status();
  auto unet = UNet::Random(*config, 3);
  ASSERT_TRUE(unet.ok()) << unet.status();
  at::Tensor x = at::randn({2, 4, 8, 8}), t = at::full({2}, 10, at::kLong), ctx = at::randn({2, 5, 16});
  at::Tensor pooled = at::randn({2, 12});
  at::Tensor ids = at::tensor({1024, 1024, 0, 0, 1024, 1024, 512, 768, 0, 0, 512, 768},
                              at::kFloat).view({2, 6});
  EXPECT_EQ((*unet)->Forward(x, t, ctx).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*unet)->Forward(x, t, ctx, at::randn({2, 11}), ids).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto a = (*unet)->Forward(x, t, ctx, pooled, ids);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->sizes(), x.sizes());
  auto b = (*unet)->Forward(x, t, ctx, pooled, ids * 0.5);
  ASSERT_TRUE(b.ok());
  EXPECT_GT((*a - *b).abs().max().item<double>(), 0.0);
  size_t add_params = 0;
  for (const auto& p : (*unet)->parameters()) add_params += p.name.rfind("add_embedding", 0) == 0;
  EXPECT_EQ(add_params, 4u);
}

TEST(UNet, RefusesUnsupportedConfigsAndBadInputs) {
  auto other = ParseUNetConfig(R"({"addition_embed_type": "image", "down_block_types": [],
                                   "up_block_types": []})", "config.json");
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(other.status().message().find("addition_embed_type"), absl::string_view::npos);
  auto no_dims = ParseUNetConfig(R"({"addition_embed_type": "text_time", "down_block_types": [],
                                     "up_block_types": []})", "config.json");
  EXPECT_EQ(no_dims.status().code(), absl::StatusCode::kInvalidArgument);
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

namespace dd::model {
namespace {

// The parameters' gradients of mean(y^2) and the output y, with gradient
// checkpointing on or off, optionally under bf16 autocast on the CPU.
std::vector<at::Tensor> GradientsOf(UNet& unet, const at::Tensor& x, const at::Tensor& t,
                                    const at::Tensor& ctx, bool checkpointing, bool autocast) {
  unet.SetGradientCheckpointing(checkpointing);
  std::vector<at::Tensor> out;
  for (const auto& p : unet.parameters()) {
    p.value.requires_grad_(true);
    p.value.mutable_grad() = at::Tensor();
  }
  SetAutocast(/*cuda=*/false, autocast, at::kBFloat16);
  auto y = unet.Forward(x, t, ctx);
  SetAutocast(/*cuda=*/false, false, at::kBFloat16);
  EXPECT_TRUE(y.ok()) << y.status();
  // Backward runs with autocast off, as in the trainer: a checkpointed
  // layer must recompute under the autocast its forward pass had.
  (y->to(at::kFloat).pow(2).mean()).backward();
  for (const auto& p : unet.parameters()) out.push_back(p.value.grad().clone());
  out.push_back(y->detach().to(at::kFloat));
  return out;
}

TEST(UNet, GradientCheckpointingGivesTheSameGradients) {
  auto unet = UNet::Load(testing::TinySd1() + "/model/unet");
  ASSERT_TRUE(unet.ok()) << unet.status();
  at::manual_seed(0);
  at::Tensor x = at::randn({2, 4, 16, 16}), ctx = at::randn({2, 77, 32});
  at::Tensor t = at::tensor({10L, 700L});
  auto grads = [&](bool checkpointing) {
    return GradientsOf(**unet, x, t, ctx, checkpointing, /*autocast=*/false);
  };
  std::vector<at::Tensor> plain = grads(false), checkpointed = grads(true);
  ASSERT_EQ(plain.size(), checkpointed.size());
  // Relative to the largest gradient: some of this fixture's gradients are
  // exactly zero in exact arithmetic (biases before one-channel GroupNorm
  // groups) and only rounding noise in float32.
  double largest = 0;
  for (const auto& g : plain) largest = std::max(largest, g.abs().max().item<double>());
  for (size_t i = 0; i < plain.size(); ++i) {
    ASSERT_TRUE(checkpointed[i].defined()) << i;
    EXPECT_LT((plain[i] - checkpointed[i]).abs().max().item<double>() / largest, 1e-5) << i;
  }
  for (const auto& p : (*unet)->parameters()) p.value.requires_grad_(false);
}

TEST(UNet, GradientCheckpointingUnderAutocastRecomputesInTheSamePrecision) {
  auto unet = UNet::Load(testing::TinySd1() + "/model/unet");
  ASSERT_TRUE(unet.ok()) << unet.status();
  at::manual_seed(0);
  at::Tensor x = at::randn({2, 4, 16, 16}), ctx = at::randn({2, 77, 32});
  at::Tensor t = at::tensor({10L, 700L});
  std::vector<at::Tensor> plain = GradientsOf(**unet, x, t, ctx, false, /*autocast=*/true);
  std::vector<at::Tensor> checkpointed = GradientsOf(**unet, x, t, ctx, true, /*autocast=*/true);
  ASSERT_EQ(plain.size(), checkpointed.size());
  double largest = 0;
  for (const auto& g : plain) largest = std::max(largest, g.abs().max().item<double>());
  for (size_t i = 0; i < plain.size(); ++i) {
    ASSERT_TRUE(checkpointed[i].defined()) << i;
    // Same operations in the same precision; the gradients differ only in
    // the order bf16 partial results are summed (seen: up to 6e-5), far
    // below bf16's resolution (4e-3). Without the saved autocast state the
    // recomputation fails outright (bf16 activations into float32 layers).
    EXPECT_LT((plain[i] - checkpointed[i]).abs().max().item<double>() / largest, 1e-3) << i;
  }
  for (const auto& p : (*unet)->parameters()) p.value.requires_grad_(false);
}

}  // namespace
}  // namespace dd::model
