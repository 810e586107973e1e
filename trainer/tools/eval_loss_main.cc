// eval_loss: the held-out diffusion loss of a model folder (or checkpoint)
// on a dataset no peer trains: every sample's noise, timestep and latent
// sample are fixed by (--seed, its key), so runs and checkpoints compare
// without sampling noise. No augmentation (no flips, no caption dropout).
//
//   bazel run //trainer/tools:eval_loss -- --model_dir=O/checkpoint-100 --dataset_dir=HELDOUT \
//       --resolution=64 --batch_size=16
#include <gflags/gflags.h>

#include <filesystem>
#include <iostream>

#include "absl/strings/str_format.h"
#include "common/init/init.h"
#include "common/status/status_macros.h"
#include "trainer/data/data_loader.h"
#include "trainer/data/sample_source.h"
#include "trainer/training/trainer.h"

DEFINE_string(model_dir, "", "Diffusers model folder or checkpoint.");
DEFINE_string(dataset_dir, "", "Held-out samples (image + .txt pairs or .tar shards).");
DEFINE_int32(resolution, 512, "Resolution (as trained).");
DEFINE_int32(batch_size, 8, "Images per forward pass.");
DEFINE_uint64(seed, 1234, "Seed of the fixed per-sample draws.");
DEFINE_int32(max_samples, 0, "Evaluate at most this many samples (0: all).");

namespace {

absl::Status Run(int, char**) {
  if (FLAGS_model_dir.empty() || FLAGS_dataset_dir.empty()) {
    return absl::InvalidArgumentError("--model_dir and --dataset_dir are required");
  }
  dd::training::TrainerOptions o;
  o.model_dir = FLAGS_model_dir;
  o.output_dir = (std::filesystem::temp_directory_path() /
                  absl::StrFormat("eval_loss-%d", static_cast<int>(getpid())))
                     .string();
  o.resolution = FLAGS_resolution;
  o.batch_size = FLAGS_batch_size;
  o.seed = FLAGS_seed;
  o.num_workers = 2;
  ASSIGN_OR_RETURN(auto trainer, dd::training::Trainer::Create(o));
  ASSIGN_OR_RETURN(auto listing, dd::data::ListSamples(FLAGS_dataset_dir));
  dd::data::LoaderOptions lo = dd::training::LoaderOptionsFor(o);
  lo.max_epochs = 1;
  ASSIGN_OR_RETURN(auto loader, dd::data::DataLoader::Start(listing.samples, lo));
  double sum = 0;
  int64_t samples = 0;
  while (FLAGS_max_samples <= 0 || samples < FLAGS_max_samples) {
    ASSIGN_OR_RETURN(std::optional<dd::data::Batch> batch, loader->Next());
    if (!batch.has_value()) break;
    ASSIGN_OR_RETURN(double loss, trainer->EvalLoss(*batch));
    const int64_t b = batch->pixels.size(0);
    sum += loss * b;
    samples += b;
  }
  std::error_code ec;
  std::filesystem::remove_all(o.output_dir, ec);
  if (samples == 0) return absl::FailedPreconditionError("no samples to evaluate");
  std::cout << absl::StrFormat("held-out loss %.6f over %d samples\n", sum / samples, samples);
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  return dd::RunMain("eval_loss --model_dir=M --dataset_dir=HELDOUT [--resolution=512]", argc, argv, Run);
}
