// Single-file checkpoints on the fixture: diffusers -> original layout ->
// diffusers is bit-exact (float32), the file has the layout's names and
// shapes, OpenCLIP text encoders (SD 2.x) split and fuse q/k/v both ways,
// and files that do not fit are refused with the reason.
#include "trainer/model/single_file.h"

#include <cstdlib>
#include <filesystem>

#include "common/io/file_util.h"
#include "gtest/gtest.h"
#include "trainer/model/diffusers_model.h"
#include "trainer/model/model_init.h"
#include "trainer/model/testing/fixtures.h"
#include "trainer/model/torch_tensors.h"

namespace dd::model {
namespace {

namespace fs = std::filesystem;

std::string Tmp(const std::string& name) {
  std::string d = std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
  fs::remove_all(d);
  return d;
}

std::string Fixture() { return testing::TinySd1() + "/model"; }

// Every weight of a part, by name without transformers' "text_model.".
std::map<std::string, at::Tensor> Part(const std::string& dir, const std::string& part, const char* stem) {
  auto t = LoadPartTensors(dir + "/" + part, stem);
  EXPECT_TRUE(t.ok()) << t.status();
  std::map<std::string, at::Tensor> out;
  if (!t.ok()) return out;
  for (auto& [k, v] : *t) out[k.rfind("text_model.", 0) == 0 ? k.substr(11) : k] = v;
  return out;
}

void ExpectSameWeights(const std::string& a, const std::string& b) {
  for (auto [part, stem] : {std::pair{"unet", "diffusion_pytorch_model"},
                            std::pair{"vae", "diffusion_pytorch_model"}, std::pair{"text_encoder", "model"},
                            std::pair{"text_encoder_2", "model"}}) {
    if (!fs::exists(a + "/" + part)) continue;
    auto x = Part(a, part, stem), y = Part(b, part, stem);
    ASSERT_EQ(x.size(), y.size()) << part;
    for (const auto& [name, t] : x) {
      ASSERT_TRUE(y.count(name)) << part << " lacks " << name;
      EXPECT_EQ(t.scalar_type(), y.at(name).scalar_type()) << name;
      EXPECT_TRUE(at::equal(t, y.at(name))) << part << " " << name;
    }
  }
}

TEST(SingleFile, RoundTripOnTheFixtureIsBitExact) {
  const std::string file = Tmp("sd1.safetensors");
  SingleFileExportOptions o;
  o.dtype = "fp32";  // the fixture's own dtype
  auto family = ExportSingleFile(Fixture(), file, o);
  ASSERT_TRUE(family.ok()) << family.status();
  EXPECT_EQ(*family, ModelFamily::kSd1);
  auto tensors = LoadTensors(file);
  ASSERT_TRUE(tensors.ok());
  std::vector<std::string> keys;
  for (const auto& [k, t] : *tensors) keys.push_back(k);
  EXPECT_EQ(DetectFamily(keys), ModelFamily::kSd1);
  // The names and shapes of the original layout.
  EXPECT_TRUE(tensors->count("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"));
  EXPECT_TRUE(tensors->count("model.diffusion_model.middle_block.2.out_layers.3.weight"));
  EXPECT_TRUE(tensors->count("cond_stage_model.transformer.text_model.final_layer_norm.weight"));
  ASSERT_TRUE(tensors->count("first_stage_model.decoder.mid.attn_1.q.weight"));
  EXPECT_EQ(tensors->at("first_stage_model.decoder.mid.attn_1.q.weight").dim(), 4);
  const std::string out = Tmp("imported");
  auto report = ImportSingleFile(file, Fixture(), out);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->family, ModelFamily::kSd1);
  EXPECT_TRUE(report->ignored.empty());
  ExpectSameWeights(Fixture(), out);
  EXPECT_TRUE(DiffusersModel::Load(out).ok());
  EXPECT_EQ(ImportSingleFile(file, Fixture(), out).status().code(), absl::StatusCode::kAlreadyExists);
  // fp16 by default: half the bytes.
  const std::string half = Tmp("sd1-fp16.safetensors");
  ASSERT_TRUE(ExportSingleFile(Fixture(), half).ok());
  EXPECT_EQ(LoadTensors(half)->at("model.diffusion_model.out.2.weight").scalar_type(), at::kHalf);
}

TEST(SingleFile, OpenClipTextEncodersSplitAndFuseQkv) {
  // An SD 2.x-style config folder: the fixture with a gelu text encoder.
  const std::string config = Tmp("sd2-config");
  fs::copy(Fixture(), config, fs::copy_options::recursive);
  auto te = ReadFileToString(config + "/text_encoder/config.json");
  ASSERT_TRUE(te.ok());
  std::string json = *te;
  const size_t at = json.find("quick_gelu");
  ASSERT_NE(at, std::string::npos);
  json.replace(at, 10, "gelu");
  ASSERT_TRUE(WriteFileAtomically(config + "/text_encoder/config.json", json).ok());

  const std::string file = Tmp("sd2.safetensors");
  SingleFileExportOptions o;
  o.dtype = "fp32";
  auto family = ExportSingleFile(config, file, o);
  ASSERT_TRUE(family.ok()) << family.status();
  EXPECT_EQ(*family, ModelFamily::kSd2);
  auto tensors = LoadTensors(file);
  ASSERT_TRUE(tensors.ok());
  const std::string qkv = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight";
  ASSERT_TRUE(tensors->count(qkv));
  auto hidden = Part(Fixture(), "text_encoder", "model");
  const at::Tensor& q = hidden.at("encoder.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(tensors->at(qkv).size(0), 3 * q.size(0));
  EXPECT_TRUE(at::equal(tensors->at(qkv).narrow(0, 0, q.size(0)), q));
  // OpenCLIP files hold one layer more than diffusers' SD 2.x encoder uses,
  // and a logit scale: both are left out on import.
  (*tensors)["cond_stage_model.model.transformer.resblocks.3.ln_1.weight"] = at::ones({32});
  (*tensors)["cond_stage_model.model.logit_scale"] = at::ones({});
  ASSERT_TRUE(SaveTensors(file, *tensors).ok());
  const std::string out = Tmp("sd2-imported");
  auto report = ImportSingleFile(file, config, out);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->family, ModelFamily::kSd2);
  EXPECT_EQ(report->ignored.size(), 2u);
  ExpectSameWeights(config, out);
  // An SD 2.x file with an SD 1.x config folder is refused.
  EXPECT_EQ(ImportSingleFile(file, Fixture(), Tmp("mismatch")).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// SDXL: the first encoder under conditioner.embedders.0.transformer, the
// second (with its projection, transposed) under conditioner.embedders.1.model,
// the text_time UNet's label_emb; the round trip is bit-exact.
TEST(SingleFile, SdxlRoundTripIsBitExact) {
  const std::string model = Tmp("tiny-sdxl");
  ASSERT_TRUE(WriteInitialModel(model, "tiny-sdxl", 2, {"red"}).ok());
  const std::string file = Tmp("sdxl.safetensors");
  SingleFileExportOptions o;
  o.dtype = "fp32";
  auto family = ExportSingleFile(model, file, o);
  ASSERT_TRUE(family.ok()) << family.status();
  EXPECT_EQ(*family, ModelFamily::kSdxl);
  auto tensors = LoadTensors(file);
  ASSERT_TRUE(tensors.ok());
  EXPECT_TRUE(tensors->count("model.diffusion_model.label_emb.0.0.weight"));
  EXPECT_TRUE(tensors->count("conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"));
  EXPECT_TRUE(tensors->count("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"));
  const at::Tensor& projection = tensors->at("conditioner.embedders.1.model.text_projection");
  EXPECT_EQ(projection.size(0), 64);  // [hidden, projection]: OpenCLIP's orientation
  EXPECT_EQ(projection.size(1), 32);
  const std::string out = Tmp("sdxl-imported");
  auto report = ImportSingleFile(file, model, out);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->family, ModelFamily::kSdxl);
  ExpectSameWeights(model, out);
  // An SDXL file needs an SDXL config folder.
  EXPECT_EQ(ImportSingleFile(file, Fixture(), Tmp("sdxl-mismatch")).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SingleFile, FilesThatDoNotFitAreRefused) {
  const std::string file = Tmp("bad.safetensors");
  SingleFileExportOptions o;
  o.dtype = "fp32";
  ASSERT_TRUE(ExportSingleFile(Fixture(), file, o).ok());
  auto tensors = *LoadTensors(file);
  const std::string extra_path = Tmp("extra.safetensors"), missing_path = Tmp("missing.safetensors"),
                    sdxl_path = Tmp("sdxl.safetensors"), other_path = Tmp("other.safetensors");
  // A key under the UNet's prefix that the layout does not name.
  auto extra = tensors;
  extra["model.diffusion_model.input_blocks.99.0.in_layers.0.weight"] = at::zeros({1});
  ASSERT_TRUE(SaveTensors(extra_path, extra).ok());
  EXPECT_EQ(ImportSingleFile(extra_path, Fixture(), Tmp("o1")).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A missing tensor: the check load names it.
  auto missing = tensors;
  missing.erase("model.diffusion_model.out.2.weight");
  ASSERT_TRUE(SaveTensors(missing_path, missing).ok());
  const std::string o2 = Tmp("o2");
  auto s = ImportSingleFile(missing_path, Fixture(), o2).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("conv_out.weight"), std::string::npos) << s;
  EXPECT_FALSE(fs::exists(o2));
  // An SDXL file (by its conditioner) with an SD 1.x config folder; a file
  // that is no checkpoint at all.
  auto sdxl = tensors;
  sdxl["conditioner.embedders.1.model.ln_final.weight"] = at::ones({4});
  ASSERT_TRUE(SaveTensors(sdxl_path, sdxl).ok());
  EXPECT_EQ(ImportSingleFile(sdxl_path, Fixture(), Tmp("o3")).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(SaveTensors(other_path, {{"weight", at::zeros({2})}}).ok());
  EXPECT_EQ(ImportSingleFile(other_path, Fixture(), Tmp("o4")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ImportSingleFile(file, "/nonexistent", Tmp("o5")).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace dd::model
