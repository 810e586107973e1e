#include "trainer/training/vae_trainer.h"

#include <ATen/CPUGeneratorImpl.h>

#include <deque>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/image/image_codec.h"
#include "common/io/file_util.h"
#include "common/metrics/event_writer.h"
#include "common/progress/progress_line.h"
#include "common/status/status_macros.h"
#include "trainer/data/data_loader.h"
#include "trainer/data/sample_source.h"
#include "trainer/model/vae.h"
#include "trainer/pipeline/txt2img.h"
#include "trainer/training/gradients.h"
#include "trainer/training/optimizer.h"

namespace dd::training {
namespace {

// Standard deviation of latents sampled from `batches` batches (over every
// element, as SD's authors measured theirs).
absl::StatusOr<double> MeasureLatentStd(const model::AutoencoderKL& vae, data::DataLoader& loader,
                                        int batches, at::Generator& gen) {
  double sum = 0, sum_sq = 0, count = 0;
  try {
    at::NoGradGuard no_grad;
    for (int i = 0; i < batches; ++i) {
      ASSIGN_OR_RETURN(std::optional<data::Batch> batch, loader.Next());
      if (!batch.has_value()) break;
      ASSIGN_OR_RETURN(model::LatentDistribution dist, vae.Encode(batch->pixels));
      at::Tensor z = dist.Sample(gen).to(at::kDouble);
      sum += z.sum().item<double>();
      sum_sq += z.pow(2).sum().item<double>();
      count += static_cast<double>(z.numel());
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("measuring the latents: ", e.what_without_backtrace()));
  }
  if (count < 2) return absl::FailedPreconditionError("no batch to measure the latents on");
  const double mean = sum / count;
  const double var = (sum_sq - count * mean * mean) / (count - 1);
  if (!(var > 0) || !std::isfinite(var)) {
    return absl::InternalError(absl::StrCat("the latents have variance ", var));
  }
  return std::sqrt(var);
}

}  // namespace

absl::StatusOr<VaeTrainResult> TrainVae(const VaeTrainOptions& o) {
  if (o.batch_size < 1 || o.max_steps < 0 || !(o.lr > 0) || o.calibration_batches < 0) {
    return absl::InvalidArgumentError(
        "batch_size must be >= 1, max_steps and calibration_batches >= 0, and lr > 0");
  }
  auto vae_or = model::AutoencoderKL::Load(o.model_dir + "/vae");
  if (!vae_or.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("model folder ", o.model_dir, ": ", vae_or.status().message()));
  }
  std::unique_ptr<model::AutoencoderKL> vae = std::move(*vae_or);
  auto listing = data::ListSamples(o.dataset_dir);
  if (!listing.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("dataset ", o.dataset_dir, ": ", listing.status().message()));
  }
  data::LoaderOptions lo;
  lo.batch_size = o.batch_size;
  lo.buckets.resolution = o.resolution;
  lo.buckets.square_only = true;
  lo.buckets.step = std::min(64, o.resolution);
  lo.random_flip = true;
  lo.seed = o.seed;
  lo.num_workers = o.num_workers;
  ASSIGN_OR_RETURN(auto loader, data::DataLoader::Start(listing->samples, lo));
  std::vector<NamedTensor> params;
  for (const auto& p : vae->parameters()) {
    p.value.requires_grad_(true);
    params.push_back({p.name, p.value});
  }
  ASSIGN_OR_RETURN(auto optimizer, MakeAdamW(params, AdamWOptions{0.9, 0.999, 1e-8, 0.0}));
  ASSIGN_OR_RETURN(auto jsonl, metrics::JsonlWriter::Open(o.output_dir + "/vae_metrics.jsonl"));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  ProgressLine progress("vae training", o.max_steps, "steps");
  std::deque<double> recent;
  VaeTrainResult result;
  double first_sum = 0;
  int first_n = 0;
  at::Tensor last_inputs, last_recon;
  try {
    for (int64_t step = 0; step < o.max_steps; ++step) {
      ASSIGN_OR_RETURN(std::optional<data::Batch> batch, loader->Next());
      if (!batch.has_value()) return absl::OutOfRangeError("the dataset ended");
      for (auto& p : params) p.value.mutable_grad() = at::Tensor();
      ASSIGN_OR_RETURN(model::LatentDistribution dist, vae->Encode(batch->pixels));
      at::Tensor z = dist.Sample(gen);
      ASSIGN_OR_RETURN(at::Tensor recon, vae->Decode(z));
      at::Tensor mse = at::mse_loss(recon, batch->pixels);
      at::Tensor kl = 0.5 * (dist.mean.pow(2) + dist.logvar.exp() - 1 - dist.logvar).sum({1, 2, 3}).mean();
      at::Tensor loss = mse + o.kl_weight * kl;
      loss.backward();
      std::vector<at::Tensor> grads;
      for (auto& p : params) grads.push_back(p.value.grad());
      const double norm = ClipGradNorm(grads, 1.0);
      if (std::isfinite(norm)) RETURN_IF_ERROR(optimizer->Step(grads, o.lr));
      const double value = mse.item<double>();
      if (first_n < 10) {
        first_sum += value;
        ++first_n;
      }
      recent.push_back(value);
      if (recent.size() > 10) recent.pop_front();
      RETURN_IF_ERROR(jsonl->Write({{"step", double(step + 1)},
                                    {"reconstruction_mse", value},
                                    {"kl", kl.item<double>()},
                                    {"grad_norm", norm}}));
      progress.Update(step + 1, 0, absl::StrFormat("reconstruction mse %.4f", value));
      if (step + 1 == o.max_steps) {
        last_inputs = batch->pixels.detach();
        last_recon = recon.detach();
      }
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("vae training: ", e.what_without_backtrace()));
  }
  progress.Finish();
  for (auto& p : params) {
    p.value.requires_grad_(false);
    p.value.mutable_grad() = at::Tensor();
  }
  if (o.calibration_batches > 0) {
    ASSIGN_OR_RETURN(result.latent_std, MeasureLatentStd(*vae, *loader, o.calibration_batches, gen));
    RETURN_IF_ERROR(vae->SetScalingFactor(1.0 / result.latent_std));
    LOG(INFO) << "latent std " << result.latent_std << ": scaling_factor " << 1.0 / result.latent_std;
  }
  result.scaling_factor = vae->scaling_factor();
  result.first_loss = first_sum / std::max(first_n, 1);
  double sum = 0;
  for (double v : recent) sum += v;
  result.last_loss = sum / std::max<size_t>(recent.size(), 1);
  // The model folder again with the trained VAE; the other parts linked.
  RETURN_IF_ERROR(LinkOrCopyTree(o.model_dir, o.output_dir,
                                 [](const std::string& name) { return name != "vae"; }));
  RETURN_IF_ERROR(vae->Save(o.output_dir + "/vae"));
  if (!last_inputs.defined()) return result;  // calibration only
  // Inputs above their reconstructions.
  std::vector<RgbImage> tiles;
  const int64_t n = std::min<int64_t>(last_inputs.size(0), 8);
  for (const at::Tensor& t : {last_inputs, last_recon}) {
    for (int64_t i = 0; i < n; ++i) {
      ASSIGN_OR_RETURN(RgbImage img, pipeline::ToRgbImage((t[i].permute({1, 2, 0}) + 1) / 2));
      tiles.push_back(std::move(img));
    }
  }
  ASSIGN_OR_RETURN(RgbImage grid, pipeline::MakeGrid(tiles, static_cast<int>(n)));
  ASSIGN_OR_RETURN(std::string png, EncodePng(grid));
  result.reconstructions_png = o.output_dir + "/vae_reconstructions.png";
  RETURN_IF_ERROR(WriteFileAtomically(result.reconstructions_png, png));
  return result;
}

}  // namespace dd::training
