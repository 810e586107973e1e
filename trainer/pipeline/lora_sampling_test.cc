// A LoRA file applied while sampling (what `sample --lora` does) gives the
// images of the model with that LoRA merged into its weights (what
// `export_model --lora` writes), in both file formats and at a scale.
#include <cstdlib>
#include <filesystem>

#include "gtest/gtest.h"
#include "trainer/model/diffusers_model.h"
#include "trainer/model/lora.h"
#include "trainer/model/model_export.h"
#include "trainer/model/testing/fixtures.h"
#include "trainer/pipeline/txt2img.h"

namespace dd::pipeline {
namespace {

using model::DiffusersModel;

std::string Tmp(const std::string& name) {
  std::string d = std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
  std::filesystem::remove_all(d);
  return d;
}

at::Tensor Draw(DiffusersModel* m) {
  auto pipe = Txt2ImgPipeline::Create(m);
  EXPECT_TRUE(pipe.ok()) << pipe.status();
  Txt2ImgOptions o;
  o.prompt = "a red circle on a blue background";
  o.steps = 4;
  o.seed = 5;
  auto image = pipe->Generate(o);
  EXPECT_TRUE(image.ok()) << image.status();
  return image.ok() ? *image : at::Tensor();
}

// A trained-looking LoRA on the fixture's UNet, saved in `format`.
std::string MakeLora(model::LoraFormat format, const std::string& name) {
  auto m = DiffusersModel::Load(model::testing::TinySd1() + "/model");
  EXPECT_TRUE(m.ok());
  model::LoraOptions o;
  o.rank = 4;
  o.alpha = 2;
  o.targets = {"attention", "feed_forward"};
  EXPECT_TRUE(model::AttachLora((*m)->unet->lora_slots(), o).ok());
  o.targets = {"text_encoder"};
  EXPECT_TRUE(model::AttachLora((*m)->text_encoder->lora_slots(), o).ok());
  auto g = at::detail::createCPUGenerator(11);
  for (model::LoraSlots* slots : {&(*m)->unet->lora_slots(), &(*m)->text_encoder->lora_slots()}) {
    for (auto& [module, slot] : *slots) {
      if (slot->up.defined()) slot->up.copy_(at::randn(slot->up.sizes(), g) * 0.2);
    }
  }
  const std::string path = Tmp(name);
  EXPECT_TRUE(model::SaveLora(path, model::LoraModules((*m)->unet.get(), (*m)->text_encoder.get()), format,
                              o.alpha)
                  .ok());
  return path;
}

TEST(LoraSampling, AppliedLoraDrawsWhatTheMergedModelDraws) {
  const std::string base_dir = model::testing::TinySd1() + "/model";
  auto base = DiffusersModel::Load(base_dir);
  ASSERT_TRUE(base.ok());
  const at::Tensor plain = Draw(base->get());
  for (auto format : {model::LoraFormat::kKohya, model::LoraFormat::kPeft}) {
    const std::string lora = MakeLora(format, format == model::LoraFormat::kKohya ? "k.safetensors"
                                                                                   : "p.safetensors");
    for (double scale : {1.0, 0.5}) {
      SCOPED_TRACE(::testing::Message() << "format " << int(format) << " scale " << scale);
      auto applied = DiffusersModel::Load(base_dir);
      ASSERT_TRUE(applied.ok());
      ASSERT_TRUE(model::LoadLora(lora, model::LoraModules((*applied)->unet.get(), (*applied)->text_encoder.get()), scale).ok());
      const at::Tensor with_lora = Draw(applied->get());
      const std::string merged_dir = Tmp("merged");
      model::ExportOptions eo;
      eo.dtype = "fp32";
      eo.lora = lora;
      eo.lora_scale = scale;
      ASSERT_TRUE(model::ExportModel(base_dir, merged_dir, eo).ok());
      EXPECT_FALSE(std::filesystem::exists(merged_dir + "/" + model::kLoraFile));
      auto merged = DiffusersModel::Load(merged_dir);
      ASSERT_TRUE(merged.ok()) << merged.status();
      const at::Tensor from_merged = Draw(merged->get());
      // The LoRA changes the image, and the merged model draws the same
      // (float32: the two sum in a different order).
      EXPECT_GT((with_lora - plain).abs().max().item<double>(), 1e-3);
      EXPECT_LT((with_lora - from_merged).abs().max().item<double>(), 1e-4);
    }
  }
}

}  // namespace
}  // namespace dd::pipeline
