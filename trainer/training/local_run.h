// LocalRun: training on one process from a dataset folder, the way
// diffusers' train_text_to_image runs: the trainer's steps (trainer.h), fed
// by a DataLoader that resumes where the checkpoint left off, driven by
// RunLoop (progress, metrics, checkpoints and sample grids on schedule).
//
// The Trainer itself has no dataset: a collaboration's peer feeds it the
// chunks it leases (trainer/collab), this class feeds it a folder.
#ifndef TRAINER_TRAINING_LOCAL_RUN_H_
#define TRAINER_TRAINING_LOCAL_RUN_H_

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "trainer/data/data_loader.h"
#include "trainer/training/run_loop.h"
#include "trainer/training/trainer.h"

namespace dd::training {

class LocalRun : public SteppedRun {
 public:
  // Lists `options.dataset_dir`, creates the trainer (restoring
  // resume_from; sample prompts from the dataset's captions when none are
  // given) and starts the loader at the trainer's data position.
  // FailedPrecondition naming the problem for a missing or empty dataset,
  // and Trainer::Create's errors.
  static absl::StatusOr<std::unique_ptr<LocalRun>> Create(const TrainerOptions& options);

  // Trains until options.max_steps through RunLoop.
  absl::Status Run();

  Trainer* trainer() { return trainer_.get(); }
  const Trainer* trainer() const { return trainer_.get(); }

  // SteppedRun. A step is gradient_accumulation_steps batches from the
  // dataset and one update; OutOfRange if the loader ends (it repeats
  // epochs, so only with a bounded epoch count).
  int64_t step() const override { return trainer_->step(); }
  absl::StatusOr<StepReport> TakeStep() override;
  absl::Status Record(const StepReport& report,
                      const std::map<std::string, double>& extra) override;
  absl::StatusOr<std::string> SaveCheckpoint() override;
  // Unimplemented when the run has no prompts (no grids then).
  absl::StatusOr<std::string> WriteSamples() override;
  absl::Status Finish() override;

 private:
  LocalRun(std::unique_ptr<Trainer> trainer, std::unique_ptr<data::DataLoader> loader)
      : trainer_(std::move(trainer)), loader_(std::move(loader)) {}

  // Fixed after construction.
  const std::unique_ptr<Trainer> trainer_;
  const std::unique_ptr<data::DataLoader> loader_;
};

}  // namespace dd::training

#endif  // TRAINER_TRAINING_LOCAL_RUN_H_
