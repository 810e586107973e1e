// Benchmark: the UNet training step as diffusers' anchor measures it
// (../shared/notes/gpu.md): a UNet of a named size with random weights,
// random latents [B, 4, L, L] and text states [B, 77, D], MSE on the noise,
// AdamW lr 1e-5, under autocast; median of --steps steps after --warmup.
// Baseline in the same run: the forward pass alone (no gradients) on the
// same batch, so the ratio is comparable across machines.
//
// Plain --key=value flags (no gflags). On the GPU machine it is built from
// the bundle (tools/gpu/build_from_bundle.sh), which defines DD_WITH_CUDA
// for a CUDA libtorch: it then also reports the GPU's peak allocated memory.
//
//   bazel run -c opt //trainer/training:unet_step_bench -- --size=tiny --batches=4 --latent=16
#include <ATen/core/grad_mode.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "trainer/model/model_init.h"
#include "trainer/model/torch_compat.h"
#include "trainer/model/unet.h"
#include "trainer/training/optimizer.h"

#ifdef DD_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace {

using Clock = std::chrono::steady_clock;

struct Flags {
  std::string size = "sd15";
  std::string device = "auto";
  std::string batches = "8,32";
  std::string mixed_precision = "bf16";  // no, bf16, fp16
  int latent = 64;
  int warmup = 3;
  int steps = 12;
  bool gradient_checkpointing = false;
};

bool ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto eq = a.find('=');
    if (a.rfind("--", 0) != 0 || eq == std::string::npos) return false;
    std::string key = a.substr(2, eq - 2), value = a.substr(eq + 1);
    if (key == "size") f->size = value;
    else if (key == "device") f->device = value;
    else if (key == "batches") f->batches = value;
    else if (key == "mixed_precision") f->mixed_precision = value;
    else if (key == "gradient_checkpointing") f->gradient_checkpointing = value == "true" || value == "1";
    else if (key == "latent" && absl::SimpleAtoi(value, &f->latent)) continue;
    else if (key == "warmup" && absl::SimpleAtoi(value, &f->warmup)) continue;
    else if (key == "steps" && absl::SimpleAtoi(value, &f->steps)) continue;
    else return false;
  }
  return f->steps > 0 && f->warmup >= 0 && f->latent > 0;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Waits for the device: reading one value back finishes the queued work.
void Sync(const at::Tensor& t) { (void)t.view(-1)[0].item<float>(); }

#ifdef DD_WITH_CUDA
// The CUDA device index of `device` ("cuda" alone: the current one).
c10::DeviceIndex CudaIndex(const at::Device& device) {
  return device.has_index() ? device.index() : c10::cuda::current_device();
}
#endif

double PeakMiB(const at::Device& device) {
#ifdef DD_WITH_CUDA
  if (device.is_cuda()) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(CudaIndex(device));
    return stats.allocated_bytes[0].peak / 1048576.0;
  }
#endif
  (void)device;
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;
}

// Starts a new peak for PeakMiB (each batch size reports its own).
void ResetPeak(const at::Device& device) {
#ifdef DD_WITH_CUDA
  if (device.is_cuda()) {
    c10::cuda::CUDACachingAllocator::emptyCache();
    c10::cuda::CUDACachingAllocator::resetPeakStats(CudaIndex(device));
  }
#endif
  (void)device;
}

int Run(const Flags& f) {
  auto config_json = dd::model::UNetConfigJson(f.size);
  if (!config_json.ok()) {
    std::cerr << config_json.status() << "\n";
    return 2;
  }
  auto config = dd::model::ParseUNetConfig(*config_json, f.size);
  if (!config.ok()) {
    std::cerr << config.status() << "\n";
    return 2;
  }
  const at::Device device = f.device == "auto" ? (at::hasCUDA() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU))
                                               : at::Device(f.device);
  const bool autocast = f.mixed_precision != "no";
  const at::ScalarType dtype = f.mixed_precision == "fp16" ? at::kHalf : at::kBFloat16;
  std::cout << absl::StrFormat("UNet %s, latents %dx%d, %s, autocast %s, %d threads\n", f.size, f.latent,
                               f.latent, device.str(), f.mixed_precision, at::get_num_threads());
  for (absl::string_view b : absl::StrSplit(f.batches, ',')) {
    int batch = 0;
    if (!absl::SimpleAtoi(b, &batch) || batch < 1) return 2;
    auto unet_or = dd::model::UNet::Random(*config, 0);
    if (!unet_or.ok()) {
      std::cerr << unet_or.status() << "\n";
      return 1;
    }
    std::unique_ptr<dd::model::UNet> unet = std::move(*unet_or);
    std::vector<dd::training::NamedTensor> params;
    int64_t n = 0;
    for (const auto& p : unet->parameters()) {
      p.value.set_data(p.value.to(device));
      p.value.requires_grad_(true);
      params.push_back({p.name, p.value});
      n += p.value.numel();
    }
    ResetPeak(device);  // after the first allocation: CUDA is initialised by then
    unet->SetGradientCheckpointing(f.gradient_checkpointing);
    auto adam = dd::training::MakeAdamW(params, {});
    if (!adam.ok()) return 1;
    at::Tensor x = at::randn({batch, config->in_channels, f.latent, f.latent}).to(device);
    at::Tensor noise = at::randn_like(x);
    at::Tensor ctx = at::randn({batch, 77, config->cross_attention_dim}).to(device);
    at::Tensor t = at::randint(1000, {batch}, at::kLong).to(device);
    std::vector<double> forward_s, step_s;
    for (int i = 0; i < f.warmup + f.steps; ++i) {
      {
        at::NoGradGuard no_grad;
        auto t0 = Clock::now();
        dd::model::SetAutocast(device.is_cuda(), autocast, dtype);
        auto out = unet->Forward(x, t, ctx);
        dd::model::SetAutocast(device.is_cuda(), false, dtype);
        if (!out.ok()) {
          std::cerr << out.status() << "\n";
          return 1;
        }
        Sync(*out);
        if (i >= f.warmup) forward_s.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      }
      auto t0 = Clock::now();
      dd::model::SetAutocast(device.is_cuda(), autocast, dtype);
      auto pred = unet->Forward(x, t, ctx);
      dd::model::SetAutocast(device.is_cuda(), false, dtype);
      if (!pred.ok()) {
        std::cerr << pred.status() << "\n";
        return 1;
      }
      at::Tensor loss = at::mse_loss(pred->to(at::kFloat), noise);
      loss.backward();
      std::vector<at::Tensor> grads;
      for (auto& p : params) grads.push_back(p.value.grad());
      if (absl::Status s = (*adam)->Step(grads, 1e-5); !s.ok()) {
        std::cerr << s << "\n";
        return 1;
      }
      for (auto& p : params) p.value.mutable_grad() = at::Tensor();
      Sync(params.front().value);
      if (i >= f.warmup) step_s.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
    const double fwd = Median(forward_s), step = Median(step_s);
    std::cout << absl::StrFormat(
        "batch %3d: forward %8.1f ms (baseline) | training step %8.1f ms, %7.1f img/s, ratio to "
        "forward %.2f | peak %.1f GiB | %lld parameters\n",
        batch, fwd * 1e3, step * 1e3, batch / step, step / fwd, PeakMiB(device) / 1024, static_cast<long long>(n));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  if (!ParseFlags(argc, argv, &f)) {
    std::cerr << "usage: unet_step_bench [--size=sd15|small|tiny] [--device=auto|cpu|cuda] "
                 "[--batches=8,32] [--mixed_precision=bf16|fp16|no] [--latent=64] [--warmup=3] "
                 "[--steps=12] [--gradient_checkpointing=true]\n";
    return 2;
  }
  try {
    return Run(f);
  } catch (const c10::Error& e) {
    std::cerr << "libtorch: " << e.what_without_backtrace() << "\n";
    return 1;
  }
}
