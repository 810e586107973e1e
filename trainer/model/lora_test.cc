// LoRA on the fixture's UNet: attaching changes nothing until trained;
// merging adds scale·up·down to exactly the adapted weights and leaves the
// forward pass as it was with the adapter; files of both formats load back
// to the same adapters, with the names the public formats use.
#include "trainer/model/lora.h"

#include <ATen/core/grad_mode.h>
#include <cstdlib>

#include "gtest/gtest.h"
#include "trainer/model/testing/fixtures.h"
#include "trainer/model/clip_text_model.h"
#include "trainer/model/torch_tensors.h"
#include "trainer/model/unet.h"

namespace dd::model {
namespace {

std::unique_ptr<UNet> LoadUNet() {
  auto unet = UNet::Load(testing::TinySd1() + "/model/unet");
  EXPECT_TRUE(unet.ok()) << unet.status();
  return unet.ok() ? std::move(*unet) : nullptr;
}

std::string Tmp(const std::string& name) { return std::string(std::getenv("TEST_TMPDIR")) + "/" + name; }

struct Inputs {
  at::Tensor sample, timestep, context;
};
Inputs FixtureInputs() {
  auto ref = LoadTensors(testing::TinySd1() + "/reference/unet_io.safetensors");
  EXPECT_TRUE(ref.ok());
  return {ref->at("sample"), ref->at("timestep"), ref->at("encoder_hidden_states")};
}

at::Tensor Forward(const UNet& unet, const Inputs& in) {
  at::NoGradGuard no_grad;
  auto out = unet.Forward(in.sample, in.timestep, in.context);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : at::Tensor();
}

// Gives every attached `up` random values (a trained adapter).
void Train(LoraSlots& slots, uint64_t seed) {
  auto g = at::detail::createCPUGenerator(seed);
  at::NoGradGuard no_grad;
  for (auto& [m, slot] : slots) {
    if (slot->up.defined()) slot->up.copy_(at::randn(slot->up.sizes(), g) * 0.05);
  }
}

TEST(Lora, AttachesToTheAttentionProjectionsAndStartsAsANoOp) {
  auto unet = LoadUNet();
  ASSERT_NE(unet, nullptr);
  const Inputs in = FixtureInputs();
  const at::Tensor base = Forward(*unet, in);
  LoraOptions o;
  o.rank = 4;
  o.alpha = 8;
  auto params = AttachLora(unet->lora_slots(), o);
  ASSERT_TRUE(params.ok()) << params.status();
  int adapted = 0;
  for (const auto& [m, slot] : unet->lora_slots()) {
    if (!slot->down.defined()) continue;
    ++adapted;
    EXPECT_TRUE(IsLoraTarget(m, {"attention"})) << m;
    EXPECT_EQ(slot->down.size(0), 4);
    EXPECT_EQ(slot->scale, 2.0);  // alpha / rank
  }
  // 2 down blocks + mid + 3 up block attentions with one transformer block
  // each... counted from the fixture: every attn1/attn2 has 4 projections.
  EXPECT_GT(adapted, 0);
  EXPECT_EQ(adapted % 4, 0);
  EXPECT_EQ(params->size(), size_t(2 * adapted));
  EXPECT_TRUE(at::equal(Forward(*unet, in), base));  // up = 0
  LoraOptions bad = o;
  bad.targets = {"text_encoder"};
  EXPECT_EQ(AttachLora(unet->lora_slots(), bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Lora, MergingAddsScaleTimesUpDownAndKeepsTheOutput) {
  auto unet = LoadUNet();
  ASSERT_NE(unet, nullptr);
  const Inputs in = FixtureInputs();
  LoraOptions o;
  o.rank = 2;
  o.alpha = 1;
  o.targets = {"attention", "feed_forward"};
  ASSERT_TRUE(AttachLora(unet->lora_slots(), o).ok());
  Train(unet->lora_slots(), 7);
  const at::Tensor adapted = Forward(*unet, in);
  std::map<std::string, at::Tensor> before, expected;
  for (const auto& p : unet->parameters()) before[p.name] = p.value.clone();
  for (const auto& [m, slot] : unet->lora_slots()) {
    if (slot->down.defined()) {
      expected[m + ".weight"] = before[m + ".weight"] + 0.5 * at::mm(slot->up, slot->down);
    }
  }
  MergeLora(unet->lora_slots());
  for (const auto& p : unet->parameters()) {
    auto it = expected.find(p.name);
    if (it == expected.end()) {
      EXPECT_TRUE(at::equal(p.value, before[p.name])) << p.name << " changed";
    } else {
      EXPECT_TRUE(at::allclose(p.value, it->second, 1e-6, 1e-7)) << p.name;
    }
  }
  for (const auto& [m, slot] : unet->lora_slots()) EXPECT_FALSE(slot->down.defined()) << m;
  EXPECT_LT(testing::RelativeError(Forward(*unet, in), adapted), 1e-5);
}

TEST(Lora, FilesOfBothFormatsLoadBackToTheSameAdapters) {
  auto unet = LoadUNet();
  ASSERT_NE(unet, nullptr);
  const Inputs in = FixtureInputs();
  LoraOptions o;
  o.rank = 4;
  o.alpha = 2;
  ASSERT_TRUE(AttachLora(unet->lora_slots(), o).ok());
  Train(unet->lora_slots(), 3);
  const at::Tensor adapted = Forward(*unet, in);
  ASSERT_TRUE(SaveLora(Tmp("kohya.safetensors"), LoraModules(unet.get()), LoraFormat::kKohya, 2,
                       /*fp16=*/false).ok());
  ASSERT_TRUE(SaveLora(Tmp("peft.safetensors"), LoraModules(unet.get()), LoraFormat::kPeft, 2,
                       /*fp16=*/false).ok());
  std::map<std::string, std::string> meta;
  auto kohya = LoadTensors(Tmp("kohya.safetensors"), &meta);
  ASSERT_TRUE(kohya.ok());
  const std::string q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";
  EXPECT_EQ(KohyaName(q), "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q");
  EXPECT_TRUE(kohya->count(KohyaName(q) + ".lora_down.weight"));
  EXPECT_TRUE(kohya->count(KohyaName(q) + ".lora_up.weight"));
  EXPECT_EQ(kohya->at(KohyaName(q) + ".alpha").item<double>(), 2.0);
  auto peft = LoadTensors(Tmp("peft.safetensors"), &meta);
  ASSERT_TRUE(peft.ok());
  EXPECT_TRUE(peft->count("unet." + q + ".lora_A.weight"));
  EXPECT_TRUE(peft->count("unet." + q + ".lora_B.weight"));
  EXPECT_NE(meta["lora_adapter_metadata"].find("\"lora_alpha\":2"), std::string::npos)
      << meta["lora_adapter_metadata"];

  for (const char* file : {"kohya.safetensors", "peft.safetensors"}) {
    auto fresh = LoadUNet();
    ASSERT_NE(fresh, nullptr);
    auto n = LoadLora(Tmp(file), LoraModules(fresh.get()));
    ASSERT_TRUE(n.ok()) << file << ": " << n.status();
    for (const auto& [m, slot] : fresh->lora_slots()) {
      const auto& want = unet->lora_slots().at(m);
      ASSERT_EQ(slot->down.defined(), want->down.defined()) << m;
      if (!want->down.defined()) continue;
      EXPECT_TRUE(at::equal(slot->down, want->down)) << file << " " << m;
      EXPECT_TRUE(at::equal(slot->up, want->up)) << file << " " << m;
      EXPECT_EQ(slot->scale, 0.5) << file << " " << m;
    }
    EXPECT_TRUE(at::equal(Forward(*fresh, in), adapted)) << file;
  }
  // A multiplier scales the adapters' effect.
  auto half = LoadUNet();
  ASSERT_TRUE(LoadLora(Tmp("kohya.safetensors"), LoraModules(half.get()), 0.5).ok());
  EXPECT_EQ(half->lora_slots().at(q)->scale, 0.25);
}

// Convolution adapters (LoCon): down [r, in, k, k] with the layer's stride
// and padding, up [out, r, 1, 1]; merging folds them into the kernels; both
// file formats carry them.
TEST(Lora, ConvolutionAdaptersMergeAndRoundTrip) {
  auto unet = LoadUNet();
  ASSERT_NE(unet, nullptr);
  const Inputs in = FixtureInputs();
  LoraOptions o;
  o.rank = 2;
  o.targets = {"convolutions"};
  ASSERT_TRUE(AttachLora(unet->lora_slots(), o).ok());
  const auto& conv = unet->lora_slots().at("down_blocks.0.resnets.0.conv1");
  ASSERT_TRUE(conv->down.defined());
  EXPECT_EQ(conv->down.dim(), 4);
  EXPECT_EQ(conv->up.size(2), 1);
  EXPECT_TRUE(unet->lora_slots().at("down_blocks.0.downsamplers.0.conv")->down.defined());
  EXPECT_FALSE(unet->lora_slots().at("conv_in")->down.defined());
  Train(unet->lora_slots(), 9);
  const at::Tensor adapted = Forward(*unet, in);
  for (auto format : {LoraFormat::kKohya, LoraFormat::kPeft}) {
    ASSERT_TRUE(SaveLora(Tmp("conv.safetensors"), LoraModules(unet.get()), format, 0, false).ok());
    auto fresh = LoadUNet();
    ASSERT_TRUE(LoadLora(Tmp("conv.safetensors"), LoraModules(fresh.get())).ok());
    EXPECT_TRUE(at::equal(Forward(*fresh, in), adapted));
  }
  MergeLora(unet->lora_slots());
  EXPECT_LT(testing::RelativeError(Forward(*unet, in), adapted), 1e-5);
}

// Text-encoder adapters: kohya's lora_te_ and diffusers' text_encoder.
// keys, loaded back to the same adapters; merging keeps the encoder's output.
TEST(Lora, TextEncoderAdaptersSaveLoadAndMerge) {
  auto unet = LoadUNet();
  auto te = ClipTextModel::Load(testing::TinySd1() + "/model/text_encoder");
  ASSERT_TRUE(unet != nullptr && te.ok());
  LoraOptions o;
  o.rank = 2;
  o.targets = {"text_encoder"};
  auto params = AttachLora((*te)->lora_slots(), o);
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(params->size(), 2u * 4 * (*te)->config().num_hidden_layers);  // q, k, v, out per layer
  Train((*te)->lora_slots(), 5);
  const at::Tensor ids = at::arange(0, 77, at::kLong).remainder(100).unsqueeze(0);
  auto encode = [&](const ClipTextModel& m) {
    at::NoGradGuard no_grad;
    return m.Forward(ids)->last_hidden_state;
  };
  const at::Tensor adapted = encode(**te);
  const auto modules = LoraModules(unet.get(), te->get());
  ASSERT_TRUE(SaveLora(Tmp("te-kohya.safetensors"), modules, LoraFormat::kKohya, 0, false).ok());
  ASSERT_TRUE(SaveLora(Tmp("te-peft.safetensors"), modules, LoraFormat::kPeft, 0, false).ok());
  const std::string q = "text_model.encoder.layers.0.self_attn.q_proj";
  EXPECT_TRUE(LoadTensors(Tmp("te-kohya.safetensors"))->count(KohyaName(q, "lora_te_") + ".lora_up.weight"));
  EXPECT_TRUE(LoadTensors(Tmp("te-peft.safetensors"))->count("text_encoder." + q + ".lora_B.weight"));
  for (const char* file : {"te-kohya.safetensors", "te-peft.safetensors"}) {
    auto fresh = ClipTextModel::Load(testing::TinySd1() + "/model/text_encoder");
    auto fresh_unet = LoadUNet();
    ASSERT_TRUE(fresh.ok());
    auto n = LoadLora(Tmp(file), LoraModules(fresh_unet.get(), fresh->get()));
    ASSERT_TRUE(n.ok()) << file << ": " << n.status();
    EXPECT_EQ(*n, static_cast<int>(params->size() / 2));
    EXPECT_TRUE(at::equal(encode(**fresh), adapted)) << file;
    MergeLora((*fresh)->lora_slots());
    EXPECT_LT(testing::RelativeError(encode(**fresh), adapted), 1e-5) << file;
  }
  // Without the encoder among the modules its keys have nowhere to go.
  EXPECT_EQ(LoadLora(Tmp("te-kohya.safetensors"), LoraModules(unet.get())).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Lora, BadFilesAreClearErrors) {
  auto unet = LoadUNet();
  ASSERT_NE(unet, nullptr);
  const std::string q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";
  const int64_t dim = unet->lora_slots().at(q)->weight.size(1);
  auto write = [&](const std::string& name, std::map<std::string, at::Tensor> t) {
    EXPECT_TRUE(SaveTensors(Tmp(name), t).ok());
    return LoadLora(Tmp(name), LoraModules(unet.get())).status();
  };
  EXPECT_EQ(write("te.safetensors", {{"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
                                      at::zeros({4, 32})}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(write("unknown.safetensors", {{"lora_unet_nowhere.lora_down.weight", at::zeros({4, dim})}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(write("half.safetensors", {{KohyaName(q) + ".lora_down.weight", at::zeros({4, dim})}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(write("shape.safetensors", {{KohyaName(q) + ".lora_down.weight", at::zeros({4, dim + 1})},
                                        {KohyaName(q) + ".lora_up.weight", at::zeros({dim, 4})}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(write("other.safetensors", {{"model.diffusion_model.x", at::zeros({1})}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadLora(Tmp("missing.safetensors"), LoraModules(unet.get())).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(SaveLora(Tmp("none.safetensors"), LoraModules(unet.get()), LoraFormat::kKohya, 0).code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace dd::model
