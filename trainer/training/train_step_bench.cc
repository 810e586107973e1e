// Benchmark: one training step on CPU (VAE encode, text encoder, UNet
// forward + backward, AdamW or 8-bit AdamW) through the real Trainer, for a
// model folder (the fixture's tiny SD or init_model's sizes), with peak
// memory. Baseline in the same run: the UNet forward pass alone on the same
// batch, so the ratio says what the step costs beyond inference. Also the
// optimizer state memory of AdamW against 8-bit AdamW for that UNet.
//
//   bazel build -c opt //trainer/training:train_step_bench && \
//     bazel-bin/trainer/training/train_step_bench --model_dir=$(realpath ../shared/fixtures)/tiny-sd1/model
#include <ATen/core/grad_mode.h>
#include <ATen/Parallel.h>
#include <sys/resource.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <gflags/gflags.h>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "common/image/image_codec.h"
#include "common/init/init.h"
#include "common/status/status_macros.h"
#include "trainer/data/synthetic_shapes.h"
#include "common/io/file_util.h"
#include "trainer/model/unet.h"
#include "trainer/model/vae.h"
#include "trainer/training/optimizer.h"
#include "trainer/training/local_run.h"

DEFINE_string(model_dir, "", "A diffusers model folder.");
DEFINE_int32(batch, 4, "Batch size.");
DEFINE_int32(resolution, 32, "Image side in pixels.");
DEFINE_int32(steps, 5, "Timed steps after one warm-up step.");
DEFINE_string(variants, "adamw,adamw8bit,checkpointing",
              "Which steps to time. Peak RSS is per process: run one variant per process to "
              "compare memory.");

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double PeakMiB() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;
}

absl::Status Run(int, char**) {
  if (FLAGS_model_dir.empty()) return absl::InvalidArgumentError("--model_dir is required");
  const std::string tmp = (fs::temp_directory_path() / "dd_train_step_bench").string();
  fs::remove_all(tmp);
  fs::create_directories(tmp + "/data");
  for (int i = 0; i < 64; ++i) {
    dd::ShapeSample s = dd::RenderShapeSample(1, i, FLAGS_resolution, FLAGS_resolution);
    ASSIGN_OR_RETURN(std::string png, dd::EncodePng(s.image));
    std::ofstream(absl::StrFormat("%s/data/%03d.png", tmp, i), std::ios::binary) << png;
    std::ofstream(absl::StrFormat("%s/data/%03d.txt", tmp, i)) << s.caption;
  }
  std::cout << absl::StrFormat("model %s, batch %d, %d px, %d threads\n", FLAGS_model_dir,
                               FLAGS_batch, FLAGS_resolution, at::get_num_threads());
  double forward_s = 0;
  for (int variant = 0; variant < 3; ++variant) {
    const bool eight_bit = variant == 1, checkpointing = variant == 2;
    const char* names[] = {"adamw", "adamw8bit", "checkpointing"};
    if (!absl::StrContains(FLAGS_variants, names[variant])) continue;
    dd::training::TrainerOptions o;
    o.model_dir = FLAGS_model_dir;
    o.dataset_dir = tmp + "/data";
    o.output_dir = tmp + "/out" + std::to_string(variant);
    o.batch_size = FLAGS_batch;
    o.resolution = FLAGS_resolution;
    o.max_steps = 1000;
    o.use_8bit_adam = eight_bit;
    o.gradient_checkpointing = checkpointing;
    ASSIGN_OR_RETURN(auto run, dd::training::LocalRun::Create(o));
    RETURN_IF_ERROR(run->TakeStep().status());  // warm-up
    auto t0 = Clock::now();
    for (int i = 0; i < FLAGS_steps; ++i) RETURN_IF_ERROR(run->TakeStep().status());
    const double step_s = std::chrono::duration<double>(Clock::now() - t0).count() / FLAGS_steps;
    if (forward_s == 0) {
      // Baseline: the UNet forward alone on a batch of the same latent size.
      ASSIGN_OR_RETURN(auto unet, dd::model::UNet::Load(FLAGS_model_dir + "/unet"));
      ASSIGN_OR_RETURN(std::string vae_json, dd::ReadFileToString(FLAGS_model_dir + "/vae/config.json"));
      ASSIGN_OR_RETURN(auto vae, dd::model::ParseVaeConfig(vae_json, "vae/config.json"));
      const int64_t latent = FLAGS_resolution >> (vae.block_out_channels.size() - 1);
      at::NoGradGuard no_grad;
      at::Tensor x = at::randn({FLAGS_batch, unet->config().in_channels, latent, latent});
      at::Tensor ctx = at::randn({FLAGS_batch, 77, unet->config().cross_attention_dim});
      at::Tensor t = at::full({FLAGS_batch}, 500, at::kLong);
      RETURN_IF_ERROR(unet->Forward(x, t, ctx).status());
      auto f0 = Clock::now();
      for (int i = 0; i < FLAGS_steps; ++i) RETURN_IF_ERROR(unet->Forward(x, t, ctx).status());
      forward_s = std::chrono::duration<double>(Clock::now() - f0).count() / FLAGS_steps;
      std::cout << absl::StrFormat("%-32s %9.1f ms\n", "UNet forward (baseline)", forward_s * 1e3);
    }
    std::cout << absl::StrFormat("%-32s %9.1f ms  %.1f img/s  ratio to forward %.2f  peak RSS %.0f MiB\n",
                                 eight_bit ? "training step, 8-bit AdamW"
                                 : checkpointing ? "step, AdamW, grad checkpointing" : "training step, AdamW",
                                 step_s * 1e3, FLAGS_batch / step_s, step_s / forward_s, PeakMiB());
  }
  // Optimizer state memory for this UNet.
  ASSIGN_OR_RETURN(auto unet, dd::model::UNet::Load(FLAGS_model_dir + "/unet"));
  std::vector<dd::training::NamedTensor> params;
  int64_t n = 0;
  for (const auto& p : unet->parameters()) {
    params.push_back({p.name, p.value});
    n += p.value.numel();
  }
  ASSIGN_OR_RETURN(auto adam, dd::training::MakeAdamW(params, {}));
  ASSIGN_OR_RETURN(auto adam8, dd::training::MakeAdamW8bit(params, {}));
  std::cout << absl::StrFormat(
      "optimizer state for %d parameters: AdamW %.2f MiB, 8-bit AdamW %.2f MiB (ratio %.3f)\n", n,
      adam->StateBytes() / 1048576.0, adam8->StateBytes() / 1048576.0,
      double(adam8->StateBytes()) / adam->StateBytes());
  fs::remove_all(tmp);
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) { return dd::RunMain("train_step_bench --model_dir=D", argc, argv, Run); }
