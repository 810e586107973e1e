// The loop every training run on one process shares, whatever a step is:
// take a step, record its numbers and the progress line, and write the
// checkpoints and sample grids an OutputSchedule says are due. The UNet
// trainer (Trainer::Run) and the VAE mode run through it; a collaboration's
// peer (trainer/collab/peer_session.h) has its own loop of states around
// the coordinator, and uses the same OutputSchedule for the outputs its
// designated writer makes.
//
// Pure logic: no libtorch, so the schedule and the loop are unit-tested
// with a fake run.
#ifndef TRAINER_TRAINING_RUN_LOOP_H_
#define TRAINER_TRAINING_RUN_LOOP_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "trainer/training/step_report.h"

namespace dd::training {

// When a run writes checkpoints and sample grids.
struct OutputSchedule {
  int64_t save_steps = 0;        // every N steps (0: none on the way)
  int64_t image_log_steps = 0;   // every N steps (0: no sample grids at all)
  bool checkpoint_at_end = true;  // and after the last step
  // Whether a checkpoint / a grid is due after `step` (`last`: the run's
  // final step).
  bool CheckpointDue(int64_t step, bool last) const;
  bool SamplesDue(int64_t step, bool last) const;
  // A grid of the untrained model, before the first step.
  bool SamplesAtStart(int64_t step) const { return step == 0 && image_log_steps > 0; }
};

// One run, as the loop drives it.
class SteppedRun {
 public:
  virtual ~SteppedRun() = default;
  // Steps taken so far (a resumed run starts past 0).
  virtual int64_t step() const = 0;
  // One step; errors end the run.
  virtual absl::StatusOr<StepReport> TakeStep() = 0;
  // Records a step's numbers and the loop's own (`extra`:
  // "loss_smoothed", "images_per_second").
  virtual absl::Status Record(const StepReport& report,
                              const std::map<std::string, double>& extra) = 0;
  // Outputs; a run without them returns Unimplemented and is not asked
  // again.
  virtual absl::StatusOr<std::string> SaveCheckpoint() = 0;
  virtual absl::StatusOr<std::string> WriteSamples() = 0;
  // Called once after the last step (e.g. to flush the event file).
  virtual absl::Status Finish() = 0;
};

struct RunLoopOptions {
  std::string what = "training";  // names the progress line
  int64_t max_steps = 0;
  OutputSchedule outputs;
};

// Steps `run` until max_steps. Returns the first error of a step or an
// output; the run's numbers are in its records.
absl::Status RunLoop(const RunLoopOptions& options, SteppedRun* run);

}  // namespace dd::training

#endif  // TRAINER_TRAINING_RUN_LOOP_H_
