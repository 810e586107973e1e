#include "trainer/training/local_run.h"

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "trainer/data/sample_source.h"
#include "trainer/training/sample_writer.h"

namespace dd::training {

absl::StatusOr<std::unique_ptr<LocalRun>> LocalRun::Create(const TrainerOptions& options) {
  if (options.dataset_dir.empty()) {
    return absl::InvalidArgumentError("--dataset_dir is required");
  }
  auto listing = data::ListSamples(options.dataset_dir);
  if (!listing.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("dataset ", options.dataset_dir, ": ", listing.status().message()));
  }
  LOG(INFO) << "dataset " << options.dataset_dir << ": " << listing->samples.size()
            << " samples (" << listing->without_caption << " without caption, "
            << listing->skipped_files << " files skipped)";
  TrainerOptions o = options;
  if (o.sample_prompts.empty()) o.sample_prompts = PromptsFromCaptions(listing->samples);
  ASSIGN_OR_RETURN(std::unique_ptr<Trainer> trainer, Trainer::Create(o));
  ASSIGN_OR_RETURN(std::unique_ptr<data::DataLoader> loader,
                   data::DataLoader::Start(listing->samples, LoaderOptionsFor(o),
                                           trainer->data_position()));
  return std::unique_ptr<LocalRun>(new LocalRun(std::move(trainer), std::move(loader)));
}

absl::Status LocalRun::Run() {
  const TrainerOptions& o = trainer_->options();
  LOG(INFO) << "training " << trainer_->num_elements() << " values"
            << (o.train_text_encoder ? " (UNet and text encoder)" : " (UNet)") << " from step "
            << trainer_->step() << " to " << o.max_steps << ", batch " << o.batch_size << " x "
            << o.gradient_accumulation_steps << " accumulation, output in " << o.output_dir;
  RunLoopOptions ro;
  ro.max_steps = o.max_steps;
  ro.outputs.save_steps = o.save_steps;
  ro.outputs.image_log_steps = o.image_log_steps;
  RETURN_IF_ERROR(RunLoop(ro, this));
  if (trainer_->skipped_steps() > 0) {
    LOG(WARNING) << trainer_->skipped_steps() << " steps skipped (non-finite gradients)";
  }
  return absl::OkStatus();
}

absl::StatusOr<StepReport> LocalRun::TakeStep() {
  for (int micro = 0; micro < trainer_->options().gradient_accumulation_steps; ++micro) {
    ASSIGN_OR_RETURN(std::optional<data::Batch> batch, loader_->Next());
    if (!batch.has_value()) return absl::OutOfRangeError("the dataset ended");
    RETURN_IF_ERROR(trainer_->AccumulateBatch(*batch).status());
  }
  return trainer_->ApplyUpdate(nullptr);
}

absl::Status LocalRun::Record(const StepReport& report,
                              const std::map<std::string, double>& extra) {
  return trainer_->RecordMetrics(report, extra);
}

absl::StatusOr<std::string> LocalRun::SaveCheckpoint() { return trainer_->SaveCheckpoint(); }

absl::StatusOr<std::string> LocalRun::WriteSamples() {
  if (trainer_->options().sample_prompts.empty()) {
    return absl::UnimplementedError("no sample prompts");
  }
  return trainer_->WriteSamples();
}

absl::Status LocalRun::Finish() { return trainer_->FlushRecords(); }

}  // namespace dd::training
