// Benchmark: UNet forward and forward+backward time on CPU, and peak memory,
// for the fixture's tiny UNet and for the SD 1.5 configuration at 64x64
// latents with random weights. Baseline in the same run: a float32 matmul of
// the same FLOP count class (a 2048^3 GEMM) to compare machines.
//
//   bazel build -c opt //trainer/model:unet_bench && \
//     bazel-bin/trainer/model/unet_bench --fixture_dir=$(realpath ../shared/fixtures)/tiny-sd1/model/unet
#include <ATen/core/grad_mode.h>
#include <sys/resource.h>

#include <chrono>
#include <iostream>

#include <gflags/gflags.h>

#include <ATen/Parallel.h>

#include "absl/strings/str_format.h"
#include "common/init/init.h"
#include "trainer/model/unet.h"

DEFINE_string(fixture_dir, "", "The fixture's unet/ folder (skipped when empty).");
DEFINE_bool(sd15, true, "Also measure the SD 1.5 configuration (random weights, ~3.4 GB).");
DEFINE_int32(batch, 1, "Batch size.");
DEFINE_int32(repeats, 2, "Timed repetitions after one warm-up.");
DEFINE_bool(backward, true, "Also time forward+backward.");

namespace {

using dd::model::UNet;
using dd::model::UNetConfig;

double Seconds(const std::function<void()>& fn) {
  fn();  // warm-up
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < FLAGS_repeats; ++i) fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
         FLAGS_repeats;
}

double PeakGiB() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1048576.0;  // KiB -> GiB
}

void Measure(const std::string& name, UNet& unet, int64_t latent, int64_t tokens) {
  const UNetConfig& c = unet.config();
  at::Tensor x = at::randn({FLAGS_batch, c.in_channels, latent, latent});
  at::Tensor t = at::full({FLAGS_batch}, 500, at::kLong);
  at::Tensor ctx = at::randn({FLAGS_batch, tokens, c.cross_attention_dim});
  size_t params = 0;
  for (const auto& p : unet.parameters()) params += p.value.numel();
  double fwd = Seconds([&] {
    at::NoGradGuard no_grad;
    (void)*unet.Forward(x, t, ctx);
  });
  std::cout << absl::StrFormat("%-34s %8.1fM params  forward %8.3f s  peak RSS %.2f GiB", name,
                               params / 1e6, fwd, PeakGiB())
            << std::endl;
  if (!FLAGS_backward) return;
  for (const auto& p : unet.parameters()) p.value.requires_grad_(true);
  double fwd_bwd = Seconds([&] {
    at::Tensor out = *unet.Forward(x, t, ctx);
    out.pow(2).mean().backward();
    for (const auto& p : unet.parameters()) p.value.mutable_grad().reset();
  });
  for (const auto& p : unet.parameters()) p.value.requires_grad_(false);
  std::cout << absl::StrFormat("%-34s forward+backward %8.3f s  peak RSS %.2f GiB", name, fwd_bwd,
                               PeakGiB())
            << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
  return dd::RunMain("unet_bench [--fixture_dir=D]", argc, argv, [](int, char**) -> absl::Status {
    at::Tensor a = at::randn({2048, 2048}), b = at::randn({2048, 2048});
    double gemm = Seconds([&] { (void)at::matmul(a, b); });
    std::cout << absl::StrFormat("baseline: 2048^3 float32 GEMM %.3f s = %.1f GFLOP/s (%d threads)",
                                 gemm, 2.0 * 2048 * 2048 * 2048 / gemm / 1e9, at::get_num_threads())
              << std::endl;
    if (!FLAGS_fixture_dir.empty()) {
      auto tiny = UNet::Load(FLAGS_fixture_dir);
      if (!tiny.ok()) return tiny.status();
      Measure("fixture UNet, 16x16 latents", **tiny, 16, 77);
    }
    if (FLAGS_sd15) {
      UNetConfig c;  // SD 1.5: the defaults of UNetConfig plus these
      c.block_out_channels = {320, 640, 1280, 1280};
      c.down_block_types = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                            "DownBlock2D"};
      c.up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                          "CrossAttnUpBlock2D"};
      c.heads = {8, 8, 8, 8};
      c.transformer_layers = {1, 1, 1, 1};
      c.cross_attention_dim = 768;
      auto sd15 = UNet::Random(c, 1);
      if (!sd15.ok()) return sd15.status();
      Measure("SD 1.5 UNet (random), 64x64 latents", **sd15, 64, 77);
    }
    return absl::OkStatus();
  });
}
