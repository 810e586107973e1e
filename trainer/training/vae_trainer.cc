#include "trainer/training/vae_trainer.h"

#include <ATen/core/grad_mode.h>
#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <deque>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/image/image_codec.h"
#include "common/io/file_util.h"
#include "common/status/status_macros.h"
#include "trainer/data/data_loader.h"
#include "trainer/data/sample_source.h"
#include "trainer/model/vae.h"
#include "trainer/pipeline/txt2img.h"
#include "trainer/training/gradients.h"
#include "trainer/training/optimizer.h"
#include "trainer/training/run_loop.h"
#include "trainer/training/step_recorder.h"

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

// VAE training as RunLoop drives it: a step is one batch's reconstruction
// MSE + KL through the encoder and decoder, and an AdamW step.
class VaeRun : public SteppedRun {
 public:
  VaeRun(const VaeTrainOptions& options, model::AutoencoderKL* vae, data::DataLoader* loader,
         std::vector<NamedTensor> params, std::unique_ptr<Optimizer> optimizer,
         StepRecorder* recorder, at::Generator gen)
      : o_(options),
        vae_(vae),
        loader_(loader),
        params_(std::move(params)),
        optimizer_(std::move(optimizer)),
        recorder_(recorder),
        gen_(std::move(gen)) {}

  int64_t step() const override { return step_; }

  absl::StatusOr<StepReport> TakeStep() override {
    const auto start = std::chrono::steady_clock::now();
    ASSIGN_OR_RETURN(std::optional<data::Batch> batch, loader_->Next());
    if (!batch.has_value()) return absl::OutOfRangeError("the dataset ended");
    StepReport r;
    try {
      for (auto& p : params_) p.value.mutable_grad() = at::Tensor();
      ASSIGN_OR_RETURN(model::LatentDistribution dist, vae_->Encode(batch->pixels));
      at::Tensor z = dist.Sample(gen_);
      ASSIGN_OR_RETURN(at::Tensor recon, vae_->Decode(z));
      at::Tensor mse = at::mse_loss(recon, batch->pixels);
      at::Tensor kl =
          0.5 * (dist.mean.pow(2) + dist.logvar.exp() - 1 - dist.logvar).sum({1, 2, 3}).mean();
      at::Tensor loss = mse + o_.kl_weight * kl;
      loss.backward();
      std::vector<at::Tensor> grads;
      for (auto& p : params_) grads.push_back(p.value.grad());
      r.grad_norm = ClipGradNorm(grads, 1.0);
      r.skipped = !std::isfinite(r.grad_norm);
      if (!r.skipped) RETURN_IF_ERROR(optimizer_->Step(grads, o_.lr));
      r.loss = mse.item<double>();
      kl_ = kl.item<double>();
      if (step_ + 1 == o_.max_steps) {
        last_inputs_ = batch->pixels.detach();
        last_recon_ = recon.detach();
      }
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("vae training: ", e.what_without_backtrace()));
    }
    if (first_n_ < 10) {
      first_sum_ += r.loss;
      ++first_n_;
    }
    recent_.push_back(r.loss);
    if (recent_.size() > 10) recent_.pop_front();
    r.step = ++step_;
    r.lr = o_.lr;
    r.samples = batch->pixels.size(0);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return r;
  }

  absl::Status Record(const StepReport& r, const std::map<std::string, double>& extra) override {
    std::map<std::string, double> row = {{"step", double(r.step)},
                                         {"reconstruction_mse", r.loss},
                                         {"kl", kl_},
                                         {"grad_norm", r.grad_norm}};
    for (const auto& [k, v] : extra) row[k] = v;
    return recorder_->Record(r.step, row);
  }
  absl::StatusOr<std::string> SaveCheckpoint() override {
    return absl::UnimplementedError("the VAE mode writes its model folder at the end");
  }
  absl::StatusOr<std::string> WriteSamples() override {
    return absl::UnimplementedError("the VAE mode writes its reconstructions at the end");
  }
  absl::Status Finish() override { return recorder_->Flush(); }

  // Mean reconstruction MSE of the first and of the last 10 steps.
  double first_loss() const { return first_sum_ / std::max(first_n_, 1); }
  double last_loss() const {
    double sum = 0;
    for (double v : recent_) sum += v;
    return sum / std::max<size_t>(recent_.size(), 1);
  }
  // The last step's inputs and reconstructions (undefined without steps).
  const at::Tensor& last_inputs() const { return last_inputs_; }
  const at::Tensor& last_reconstructions() const { return last_recon_; }
  std::vector<NamedTensor> TakeParameters() { return std::move(params_); }

 private:
  const VaeTrainOptions o_;
  model::AutoencoderKL* const vae_;
  data::DataLoader* const loader_;
  std::vector<NamedTensor> params_;
  std::unique_ptr<Optimizer> optimizer_;
  StepRecorder* const recorder_;
  at::Generator gen_;
  int64_t step_ = 0;
  double kl_ = 0;
  double first_sum_ = 0;
  int first_n_ = 0;
  std::deque<double> recent_;
  at::Tensor last_inputs_, last_recon_;
};

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
  ASSIGN_OR_RETURN(auto recorder, StepRecorder::Open(o.output_dir + "/vae_metrics.jsonl",
                                                    o.output_dir + "/vae_logs", "vae/"));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  VaeRun run(o, vae.get(), loader.get(), std::move(params), std::move(optimizer), recorder.get(),
             gen);
  RunLoopOptions ro;
  ro.what = "vae training";
  ro.max_steps = o.max_steps;
  ro.outputs.checkpoint_at_end = false;  // the folder is written once, calibrated, below
  RETURN_IF_ERROR(RunLoop(ro, &run));
  VaeTrainResult result;
  result.first_loss = run.first_loss();
  result.last_loss = run.last_loss();
  const at::Tensor last_inputs = run.last_inputs(), last_recon = run.last_reconstructions();
  params = run.TakeParameters();
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
