#include "trainer/training/trainer.h"

#include "trainer/training/local_run.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "common/image/image_codec.h"
#include "gtest/gtest.h"
#include "trainer/data/synthetic_shapes.h"
#include "trainer/data/data_loader.h"
#include "trainer/data/sample_source.h"
#include "trainer/model/clip_text_model.h"
#include "trainer/model/testing/fixtures.h"
#include "trainer/model/lora.h"
#include "trainer/model/model_init.h"
#include "trainer/model/torch_tensors.h"
#include "trainer/model/unet.h"

namespace dd::training {
namespace {

namespace fs = std::filesystem;

std::string Tmp(const std::string& name) {
  std::string d = std::string(getenv("TEST_TMPDIR")) + "/" + name;
  fs::remove_all(d);
  return d;
}

std::string ShapesDataset() {
  static std::string dir = [] {
    std::string d = Tmp("shapes");
    fs::create_directories(d);
    for (int i = 0; i < 12; ++i) {
      ShapeSample s = RenderShapeSample(5, i, 40, 32);
      std::ofstream(d + "/" + std::to_string(i) + ".png", std::ios::binary) << *EncodePng(s.image);
      std::ofstream(d + "/" + std::to_string(i) + ".txt") << s.caption;
    }
    return d;
  }();
  return dir;
}

TrainerOptions Options(const std::string& out) {
  TrainerOptions o;
  o.model_dir = model::testing::TinySd1() + "/model";
  o.dataset_dir = ShapesDataset();
  o.output_dir = out;
  o.batch_size = 2;
  o.resolution = 32;
  o.random_flip = true;
  o.caption_dropout = 0.1;
  o.lr = 1e-3;
  o.lr_scheduler = "cosine";
  o.lr_warmup_steps = 3;
  o.max_steps = 20;
  o.gradient_accumulation_steps = 2;
  o.save_steps = 10;
  o.seed = 9;
  o.num_workers = 2;
  return o;
}

std::vector<at::Tensor> Weights(const Trainer& t) {
  std::vector<at::Tensor> out;
  for (auto& [name, value] : t.ParametersForTest()) out.push_back(value.clone());
  return out;
}
std::vector<at::Tensor> Weights(const LocalRun& run) { return Weights(*run.trainer()); }

void ExpectIdentical(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_TRUE(at::equal(a[i], b[i])) << "tensor " << i;
}

// `run` (created from `o`, a checkpoint saved) takes `steps` more steps; a
// run resumed from that checkpoint takes the same steps to the same weights.
void ExpectExactResume(TrainerOptions o, LocalRun& run, int steps) {
  for (int i = 0; i < steps; ++i) ASSERT_TRUE(run.TakeStep().ok());
  std::vector<at::Tensor> want = Weights(run);
  o.resume_from = "latest";
  auto resumed = LocalRun::Create(o);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  for (int i = 0; i < steps; ++i) ASSERT_TRUE((*resumed)->TakeStep().ok());
  ExpectIdentical(Weights(**resumed), want);
}

// 20 straight steps and 10 + checkpoint + resume + 10 give identical
// weights, with AdamW and with 8-bit AdamW + EMA.
TEST(Trainer, ResumeIsExact) {
  for (bool eight_bit : {false, true}) {
    TrainerOptions straight = Options(Tmp("straight"));
    straight.use_8bit_adam = eight_bit;
    straight.use_ema = eight_bit;
    straight.ema_decay = 0.9;
    auto a = LocalRun::Create(straight);
    ASSERT_TRUE(a.ok()) << a.status();
    for (int i = 0; i < 20; ++i) ASSERT_TRUE((*a)->TakeStep().ok());
    std::vector<at::Tensor> want = Weights(**a);

    TrainerOptions split = straight;
    split.output_dir = Tmp("split");
    {
      auto b = LocalRun::Create(split);
      ASSERT_TRUE(b.ok()) << b.status();
      for (int i = 0; i < 10; ++i) ASSERT_TRUE((*b)->TakeStep().ok());
      auto dir = (*b)->SaveCheckpoint();
      ASSERT_TRUE(dir.ok()) << dir.status();
      EXPECT_TRUE(fs::exists(*dir + "/unet/diffusion_pytorch_model.safetensors"));
      EXPECT_TRUE(fs::exists(*dir + "/vae/config.json"));
      EXPECT_EQ(fs::exists(*dir + "/unet_ema/config.json"), eight_bit);
      for (int i = 0; i < 3; ++i) ASSERT_TRUE((*b)->TakeStep().ok());  // lost work after the checkpoint
    }
    split.resume_from = "latest";
    auto c = LocalRun::Create(split);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ((*c)->step(), 10);
    for (int i = 0; i < 10; ++i) ASSERT_TRUE((*c)->TakeStep().ok());
    ExpectIdentical(Weights(**c), want);
  }
}

// A state from another peer is checked whole before anything changes: no
// NaN or infinity in any tensor, counters and loss scale that make sense.
TEST(Trainer, APoisonedOrInsaneStateIsRefusedAndChangesNothing) {
  auto t = LocalRun::Create(Options(Tmp("poisoned_state")));
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_TRUE((*t)->TakeStep().ok());
  auto bytes = (*t)->trainer()->ExportState();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> meta;
  ASSERT_TRUE(model::ParseTensors(*bytes, &tensors, &meta).ok());
  const std::vector<at::Tensor> before = Weights(**t);

  for (const std::string prefix : {"param.", "opt."}) {
    auto poisoned = tensors;
    for (auto& [name, value] : poisoned) {
      if (absl::StartsWith(name, prefix) && at::isFloatingType(value.scalar_type())) {
        value = value.clone();
        value.view(-1)[0] = std::nanf("");
        break;
      }
    }
    auto state = model::SerializeTensors(poisoned, meta);
    ASSERT_TRUE(state.ok()) << state.status();
    auto status = (*t)->trainer()->ImportState(*state);
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << prefix << ": " << status;
    EXPECT_NE(status.message().find("NaN or infinite"), std::string::npos) << status;
  }
  for (auto [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"loss_scale", "inf"}, {"loss_scale", "0"}, {"step", "-5"}, {"skipped_steps", "99"}}) {
    auto insane = meta;
    insane[key] = value;
    auto state = model::SerializeTensors(tensors, insane);
    ASSERT_TRUE(state.ok()) << state.status();
    EXPECT_EQ((*t)->trainer()->ImportState(*state).code(), absl::StatusCode::kFailedPrecondition)
        << key << "=" << value;
  }
  ExpectIdentical(Weights(**t), before);
  // The genuine state still imports.
  EXPECT_TRUE((*t)->trainer()->ImportState(*bytes).ok());
}

// The held-out loss: the same number at every call and every step (draws
// fixed by seed and key), no gradients, no change to the weights.
TEST(Trainer, EvalLossIsFixedAndChangesNothing) {
  TrainerOptions o = Options(Tmp("eval"));
  o.random_flip = false;
  o.caption_dropout = 0;
  auto t = LocalRun::Create(o);
  ASSERT_TRUE(t.ok()) << t.status();
  auto listing = data::ListSamples(ShapesDataset());
  ASSERT_TRUE(listing.ok());
  data::LoaderOptions lo = LoaderOptionsFor(o);
  lo.max_epochs = 1;
  auto loader = data::DataLoader::Start(listing->samples, lo);
  ASSERT_TRUE(loader.ok());
  auto batch = (*loader)->Next();
  ASSERT_TRUE(batch.ok() && batch->has_value());
  std::vector<at::Tensor> before = Weights(**t);
  auto first = (*t)->trainer()->EvalLoss(**batch);
  auto again = (*t)->trainer()->EvalLoss(**batch);
  ASSERT_TRUE(first.ok() && again.ok());
  EXPECT_TRUE(std::isfinite(*first));
  EXPECT_EQ(*first, *again);
  EXPECT_EQ((*t)->trainer()->accumulated_samples(), 0);
  ExpectIdentical(Weights(**t), before);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE((*t)->TakeStep().ok());  // past the lr warm-up from 0
  auto after = (*t)->trainer()->EvalLoss(**batch);
  ASSERT_TRUE(after.ok());
  EXPECT_NE(*after, *first);  // the weights changed, the draws did not
  auto again_after = (*t)->trainer()->EvalLoss(**batch);
  EXPECT_EQ(*after, *again_after);
}

TEST(Trainer, NonFiniteGradientsSkipTheStep) {
  auto t = LocalRun::Create(Options(Tmp("nan")));
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_TRUE((*t)->TakeStep().ok());
  std::vector<at::Tensor> before = Weights(**t);
  (*t)->trainer()->SetGradientHookForTest([](std::vector<at::Tensor>& g) { g[3].view(-1)[0] = NAN; });
  auto r = (*t)->TakeStep();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->skipped);
  EXPECT_EQ((*t)->trainer()->skipped_steps(), 1);
  ExpectIdentical(Weights(**t), before);
  (*t)->trainer()->SetGradientHookForTest(nullptr);
  r = (*t)->TakeStep();
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->skipped);
  EXPECT_TRUE(std::isfinite(r->loss));
  EXPECT_FALSE(at::equal(Weights(**t)[0], before[0]));
}

TEST(Trainer, RunWritesMetricsCheckpointsAndSamples) {
  TrainerOptions o = Options(Tmp("run"));
  o.max_steps = 6;
  o.save_steps = 2;
  o.keep_checkpoints = 2;
  o.image_log_steps = 3;
  o.sample_steps = 2;
  auto t = LocalRun::Create(o);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_TRUE((*t)->Run().ok());
  EXPECT_FALSE(fs::exists(o.output_dir + "/checkpoint-2"));  // pruned: keep 2
  EXPECT_TRUE(fs::exists(o.output_dir + "/checkpoint-4"));
  EXPECT_TRUE(fs::exists(o.output_dir + "/checkpoint-6/model_index.json"));
  EXPECT_TRUE(fs::exists(o.output_dir + "/samples/step-000000.png"));
  EXPECT_TRUE(fs::exists(o.output_dir + "/samples/step-000006.png"));
  std::ifstream jsonl(o.output_dir + "/metrics.jsonl");
  int lines = 0;
  for (std::string line; std::getline(jsonl, line);) {
    ++lines;
    EXPECT_NE(line.find("\"loss\""), std::string::npos);
  }
  EXPECT_EQ(lines, 6);
  bool events = false;
  for (auto& e : fs::directory_iterator(o.output_dir + "/logs")) {
    events |= e.path().filename().string().rfind("events.out.tfevents.", 0) == 0 && e.file_size() > 100;
  }
  EXPECT_TRUE(events);
}

TEST(Trainer, BadInputsFailAtOnceNamingTheProblem) {
  TrainerOptions o = Options(Tmp("bad"));
  o.model_dir = "/nonexistent/model";
  auto t = LocalRun::Create(o);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(t.status().message().find("/nonexistent/model"), std::string::npos) << t.status();

  o = Options(Tmp("bad2"));
  std::string empty = Tmp("empty_data");
  fs::create_directories(empty);
  o.dataset_dir = empty;
  t = LocalRun::Create(o);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(t.status().message().find("dataset"), std::string::npos) << t.status();

  o = Options("/proc/not_writable");
  t = LocalRun::Create(o);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(t.status().message().find("output directory"), std::string::npos) << t.status();

  o = Options(Tmp("bad3"));
  o.mixed_precision = "fp8";
  EXPECT_EQ(LocalRun::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.mixed_precision = "no";
  o.lr_scheduler = "sawtooth";
  EXPECT_FALSE(LocalRun::Create(o).ok());
  o.lr_scheduler = "constant";
  o.resume_from = "latest";
  EXPECT_FALSE(LocalRun::Create(o).ok());  // nothing to resume
}

// --train_text_encoder: the encoder's weights get gradients and change, the
// checkpoint carries them (loadable, equal to the live weights), and resume
// is still exact.
TEST(Trainer, TrainTextEncoderUpdatesSavesAndResumesIt) {
  TrainerOptions o = Options(Tmp("te"));
  o.train_text_encoder = true;
  o.max_steps = 6;
  auto original = model::ClipTextModel::Load(o.model_dir + "/text_encoder");
  ASSERT_TRUE(original.ok());
  auto t = LocalRun::Create(o);
  ASSERT_TRUE(t.ok()) << t.status();
  const size_t unet_only = [&] {
    TrainerOptions frozen = Options(Tmp("te_frozen"));
    return (*LocalRun::Create(frozen))->trainer()->ParametersForTest().size();
  }();
  EXPECT_EQ((*t)->trainer()->ParametersForTest().size(), unet_only + (*original)->parameters().size());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE((*t)->TakeStep().ok());
  std::map<std::string, at::Tensor> trained;
  for (auto& [name, value] : (*t)->trainer()->ParametersForTest()) {
    if (absl::StartsWith(name, "text_encoder.")) trained[name.substr(13)] = value.clone();
  }
  ASSERT_EQ(trained.size(), (*original)->parameters().size());
  int changed = 0;
  for (const auto& p : (*original)->parameters()) changed += !at::equal(trained.at(p.name), p.value);
  // Everything the captions reach moves (rows of unused tokens do not).
  EXPECT_EQ(changed, static_cast<int>(trained.size()));
  auto dir = (*t)->SaveCheckpoint();
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_FALSE(fs::equivalent(*dir + "/text_encoder/model.safetensors",
                              o.model_dir + "/text_encoder/model.safetensors"));
  auto saved = model::ClipTextModel::Load(*dir + "/text_encoder");
  ASSERT_TRUE(saved.ok()) << saved.status();
  for (const auto& p : (*saved)->parameters()) {
    ASSERT_TRUE(at::allclose(p.value, trained.at(p.name), 1e-3, 1e-3)) << p.name;  // file dtype
  }
  ASSERT_NO_FATAL_FAILURE(ExpectExactResume(o, **t, 3));
}

// LoRA: only the adapters move; the checkpoint holds them in both formats
// beside links to the base model, a run resumes from it exactly, and the
// saved adapters applied to the base give the trained model's output.
TEST(Trainer, LoraTrainsOnlyAdaptersSavesBothFormatsAndResumes) {
  TrainerOptions o = Options(Tmp("lora"));
  o.lora.rank = 4;
  o.lora.alpha = 4;
  o.lora.targets = {"attention", "text_encoder"};
  o.max_steps = 6;
  o.lr = 1e-2;
  auto t = LocalRun::Create(o);
  ASSERT_TRUE(t.ok()) << t.status();
  auto base = model::UNet::Load(o.model_dir + "/unet");
  ASSERT_TRUE(base.ok());
  for (auto& [name, value] : (*t)->trainer()->ParametersForTest()) {
    EXPECT_TRUE(absl::EndsWith(name, ".lora_down.weight") || absl::EndsWith(name, ".lora_up.weight"))
        << name;
  }
  for (int i = 0; i < 3; ++i) ASSERT_TRUE((*t)->TakeStep().ok());
  int moved = 0, text_moved = 0;
  for (auto& [name, value] : (*t)->trainer()->ParametersForTest()) {
    if (!absl::EndsWith(name, ".lora_up.weight")) continue;
    const bool changed = value.abs().max().item<double>() > 0;
    (absl::StartsWith(name, "text_encoder.") ? text_moved : moved) += changed;
  }
  EXPECT_GT(moved, 0);
  EXPECT_GT(text_moved, 0);  // the captions reach the encoder's adapters
  auto dir = (*t)->SaveCheckpoint();
  ASSERT_TRUE(dir.ok()) << dir.status();
  // The base UNet is linked, not copied: it did not change.
  EXPECT_TRUE(fs::equivalent(*dir + "/unet/diffusion_pytorch_model.safetensors",
                             o.model_dir + "/unet/diffusion_pytorch_model.safetensors"));
  EXPECT_TRUE(fs::exists(*dir + "/" + kLoraFile));
  EXPECT_TRUE(fs::exists(*dir + "/" + kKohyaLoraFile));
  // The kohya file on the base model reproduces the trained adapters (fp16).
  auto base_te = model::ClipTextModel::Load(o.model_dir + "/text_encoder");
  ASSERT_TRUE(base_te.ok());
  ASSERT_TRUE(model::LoadLora(*dir + "/" + kKohyaLoraFile, model::LoraModules(base->get(), base_te->get())).ok());
  for (auto& [name, value] : (*t)->trainer()->ParametersForTest()) {
    const bool down = absl::EndsWith(name, ".lora_down.weight");
    const bool text = absl::StartsWith(name, "text_encoder.");
    const std::string module = name.substr(text ? 13 : 0, name.rfind(".lora_") - (text ? 13 : 0));
    const auto& slot = (text ? (*base_te)->lora_slots() : (*base)->lora_slots()).at(module);
    EXPECT_TRUE(at::allclose(down ? slot->down : slot->up, value, 1e-3, 1e-4)) << name;
  }
  ASSERT_NO_FATAL_FAILURE(ExpectExactResume(o, **t, 3));
  o = Options(Tmp("lora_ema"));
  o.lora.rank = 4;
  o.use_ema = true;
  EXPECT_EQ(LocalRun::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

// SDXL fine-tuning on tiny-sdxl: both encoders' penultimate states, the
// second's pooled projection and the micro-conditioning (original size,
// crop, target size) reach the text_time UNet; steps are finite and move
// the UNet; the grid is drawn with the same conditioning; a checkpoint
// links both encoders and tokenizers.
TEST(Trainer, SdxlFineTuningStepsSamplesAndCheckpoints) {
  const std::string model = Tmp("tiny-sdxl-model");
  ASSERT_TRUE(model::WriteInitialModel(model, "tiny-sdxl", 3, {"red", "blue", "circle", "square"}).ok());
  TrainerOptions o = Options(Tmp("sdxl"));
  o.model_dir = model;
  o.max_steps = 3;
  o.save_steps = 3;
  o.image_log_steps = 3;
  o.sample_steps = 2;
  o.bucketing = true;  // the 40x32 shapes: original size and crop differ from the target
  auto t = LocalRun::Create(o);
  ASSERT_TRUE(t.ok()) << t.status();
  std::vector<at::Tensor> before = Weights(**t);
  ASSERT_TRUE((*t)->Run().ok());
  std::vector<at::Tensor> after = Weights(**t);
  int moved = 0;
  for (size_t i = 0; i < before.size(); ++i) moved += !at::equal(before[i], after[i]);
  EXPECT_GT(moved, static_cast<int>(before.size()) / 2);
  std::ifstream jsonl(o.output_dir + "/metrics.jsonl");
  int rows = 0;
  for (std::string line; std::getline(jsonl, line); ++rows) {
    EXPECT_EQ(line.find("nan"), std::string::npos) << line;
  }
  EXPECT_EQ(rows, 3);
  EXPECT_TRUE(fs::exists(o.output_dir + "/samples/step-000003.png"));
  for (const char* part : {"text_encoder_2/model.safetensors", "tokenizer_2/vocab.json", "unet/config.json"}) {
    EXPECT_TRUE(fs::exists(o.output_dir + "/checkpoint-3/" + part)) << part;
  }
}

TEST(Trainer, DeviceNamesAreCheckedBeforeAnythingLoads) {
  EXPECT_TRUE(ResolveDevice("cpu").ok());
  EXPECT_EQ(ResolveDevice("auto")->is_cuda(), at::hasCUDA());
  EXPECT_EQ(ResolveDevice("tpu").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveDevice("cuda:x").status().code(), absl::StatusCode::kInvalidArgument);
  TrainerOptions o = Options(Tmp("device"));
  if (!at::hasCUDA()) {
    o.device = "cuda";
    auto t = LocalRun::Create(o);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(t.status().message().find("CUDA"), std::string::npos) << t.status();
    o.device = "cpu";
    o.mixed_precision = "fp16";
    EXPECT_EQ(LocalRun::Create(o).status().code(), absl::StatusCode::kFailedPrecondition);
  }
}

// Loss scaling, checked on the CPU in fp32: a power-of-two scale changes no
// bit of the training, an overflow skips the step (counted) and halves the
// scale, and the scale is part of the training state.
TEST(Trainer, LossScalingIsExactAndBacksOffOnOverflow) {
  TrainerOptions o = Options(Tmp("unscaled"));
  auto plain = LocalRun::Create(o);
  o.output_dir = Tmp("scaled");
  o.force_loss_scaling = true;
  auto scaled = LocalRun::Create(o);
  ASSERT_TRUE(plain.ok() && scaled.ok());
  EXPECT_EQ((*plain)->trainer()->loss_scale(), 1.0);
  EXPECT_EQ((*scaled)->trainer()->loss_scale(), 65536.0);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE((*plain)->TakeStep().ok());
    ASSERT_TRUE((*scaled)->TakeStep().ok());
  }
  ExpectIdentical(Weights(**scaled), Weights(**plain));
  std::vector<at::Tensor> before = Weights(**scaled);
  (*scaled)->trainer()->SetGradientHookForTest([](std::vector<at::Tensor>& g) { g[0].view(-1)[0] = INFINITY; });
  auto r = (*scaled)->TakeStep();
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->skipped);
  EXPECT_EQ((*scaled)->trainer()->skipped_steps(), 1);
  EXPECT_EQ((*scaled)->trainer()->loss_scale(), 32768.0);
  ExpectIdentical(Weights(**scaled), before);
  (*scaled)->trainer()->SetGradientHookForTest(nullptr);
  ASSERT_FALSE((*scaled)->TakeStep()->skipped);
  auto dir = (*scaled)->SaveCheckpoint();
  ASSERT_TRUE(dir.ok());
  o.resume_from = *dir;
  auto resumed = LocalRun::Create(o);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ((*resumed)->trainer()->loss_scale(), 32768.0);
}

TEST(Trainer, Bf16AutocastTrainsOnCpu) {
  TrainerOptions o = Options(Tmp("bf16"));
  o.mixed_precision = "bf16";
  auto t = LocalRun::Create(o);
  ASSERT_TRUE(t.ok()) << t.status();
  auto r = (*t)->TakeStep();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(std::isfinite(r->loss));
  for (auto& [name, value] : (*t)->trainer()->ParametersForTest()) ASSERT_EQ(value.scalar_type(), at::kFloat) << name;
}

}  // namespace
}  // namespace dd::training

namespace dd::training {
namespace {

data::Batch Slice(const data::Batch& b, int64_t from, int64_t to) {
  data::Batch out;
  out.pixels = b.pixels.slice(0, from, to);
  out.captions.assign(b.captions.begin() + from, b.captions.begin() + to);
  out.keys.assign(b.keys.begin() + from, b.keys.begin() + to);
  out.original_sizes = b.original_sizes.slice(0, from, to);
  out.crop_top_left = b.crop_top_left.slice(0, from, to);
  return out;
}

// Two peers at batch 2 whose mean gradients are averaged (weights =
// samples, as the butterfly does) train exactly like one peer at batch 4 on
// the same samples: same updates on both peers, and the same weights as the
// single peer up to float rounding.
TEST(Trainer, TwoPeersAveragingEqualOnePeerAtTheirCombinedBatch) {
  TrainerOptions o = Options(Tmp("eq_single"));
  o.max_grad_norm = 0;  // clipping is per step and would also be equal; keep the test sharp
  auto single = Trainer::Create(o);
  o.output_dir = Tmp("eq_a");
  auto a = Trainer::Create(o);
  o.output_dir = Tmp("eq_b");
  auto b = Trainer::Create(o);
  ASSERT_TRUE(single.ok() && a.ok() && b.ok());
  data::LoaderOptions lo;
  lo.batch_size = 4;
  lo.buckets.resolution = 32;
  lo.buckets.square_only = true;
  lo.buckets.step = 32;
  lo.seed = 3;
  auto listing = data::ListSamples(ShapesDataset());
  ASSERT_TRUE(listing.ok());
  auto loader = data::DataLoader::Start(listing->samples, lo);
  ASSERT_TRUE(loader.ok());
  for (int step = 0; step < 3; ++step) {
    auto batch = (*loader)->Next();
    ASSERT_TRUE(batch.ok() && batch->has_value());
    const data::Batch& full = **batch;
    ASSERT_EQ(full.pixels.size(0), 4);
    ASSERT_TRUE((*single)->AccumulateBatch(full).ok());
    auto gs = (*single)->AccumulatedGradient();
    ASSERT_TRUE(gs.ok());
    ASSERT_TRUE((*single)->ApplyUpdate(nullptr).ok());
    ASSERT_TRUE((*a)->AccumulateBatch(Slice(full, 0, 2)).ok());
    ASSERT_TRUE((*b)->AccumulateBatch(Slice(full, 2, 4)).ok());
    auto ga = (*a)->AccumulatedGradient(), gb = (*b)->AccumulatedGradient();
    ASSERT_TRUE(ga.ok() && gb.ok());
    std::vector<float> avg(ga->size());
    for (size_t i = 0; i < avg.size(); ++i) avg[i] = (2 * (*ga)[i] + 2 * (*gb)[i]) / 4;
    // The averaged gradient is the single peer's, to float rounding.
    float largest = 0, diff = 0;
    for (size_t i = 0; i < avg.size(); ++i) {
      largest = std::max(largest, std::abs((*gs)[i]));
      diff = std::max(diff, std::abs((*gs)[i] - avg[i]));
    }
    EXPECT_LT(diff / largest, 1e-5) << "step " << step;
    ASSERT_TRUE((*a)->ApplyUpdate(&avg).ok());
    ASSERT_TRUE((*b)->ApplyUpdate(&avg).ok());
    EXPECT_EQ((*a)->ParameterHash(), (*b)->ParameterHash()) << "step " << step;
  }
  // Weights: equal to 1e-4 of each tensor's scale except where Adam's first
  // steps amplify rounding of near-zero gradients (see train_step_check.h).
  auto wa = Weights(**a), ws = Weights(**single);
  int64_t differing = 0, total = 0;
  for (size_t i = 0; i < wa.size(); ++i) {
    double scale = std::max(ws[i].abs().max().item<double>(), 0.1);
    differing += ((wa[i] - ws[i]).abs() > 1e-4 * scale).sum().item<int64_t>();
    total += wa[i].numel();
  }
  EXPECT_LE(differing, total * 3 / 100);
  EXPECT_NE((*a)->ParameterHash(), std::string(64, '0'));
}

}  // namespace
}  // namespace dd::training
