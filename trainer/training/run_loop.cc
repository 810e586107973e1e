#include "trainer/training/run_loop.h"

#include <cmath>

#include <glog/logging.h>

#include "absl/strings/str_format.h"
#include "common/progress/progress_line.h"

namespace dd::training {

bool OutputSchedule::CheckpointDue(int64_t step, bool last) const {
  return (save_steps > 0 && step % save_steps == 0) || (last && checkpoint_at_end);
}

bool OutputSchedule::SamplesDue(int64_t step, bool last) const {
  return image_log_steps > 0 && (step % image_log_steps == 0 || last);
}

absl::Status RunLoop(const RunLoopOptions& options, SteppedRun* run) {
  ProgressLine progress(options.what, static_cast<uint64_t>(options.max_steps), "steps");
  bool checkpoints = true, samples = true;  // until the run says it has none
  // Writes one output; Unimplemented turns that kind off for the run.
  auto output = [](const char* what, bool* enabled,
                   const absl::StatusOr<std::string>& written) -> absl::Status {
    if (written.status().code() == absl::StatusCode::kUnimplemented) {
      *enabled = false;
      return absl::OkStatus();
    }
    if (!written.ok()) return written.status();
    LOG(INFO) << what << ": " << *written;
    return absl::OkStatus();
  };
  if (options.outputs.SamplesAtStart(run->step())) {
    if (absl::Status s = output("samples before training", &samples, run->WriteSamples()); !s.ok()) {
      return s;
    }
  }
  double window_samples = 0, window_seconds = 0;
  double smoothed = NAN;
  while (run->step() < options.max_steps) {
    absl::StatusOr<StepReport> r = run->TakeStep();
    if (!r.ok()) return r.status();
    window_samples += r->samples;
    window_seconds += r->seconds;
    const double rate = window_seconds > 0 ? window_samples / window_seconds : 0;
    smoothed = std::isnan(smoothed) ? r->loss : 0.9 * smoothed + 0.1 * r->loss;
    if (absl::Status s = run->Record(*r, {{"loss_smoothed", smoothed}, {"images_per_second", rate}});
        !s.ok()) {
      return s;
    }
    progress.Update(static_cast<uint64_t>(r->step), 0,
                    absl::StrFormat("loss %.4f lr %.2e %.1f img/s", smoothed, r->lr, rate));
    const int64_t step = run->step();
    const bool last = step >= options.max_steps;
    if (checkpoints && options.outputs.CheckpointDue(step, last)) {
      if (absl::Status s = output("checkpoint", &checkpoints, run->SaveCheckpoint()); !s.ok()) {
        return s;
      }
    }
    if (samples && options.outputs.SamplesDue(step, last)) {
      if (absl::Status s = output("samples", &samples, run->WriteSamples()); !s.ok()) return s;
    }
  }
  if (absl::Status s = run->Finish(); !s.ok()) return s;
  // The final line carries the run's rate too: a short run may print no
  // other line (progress lines are rate-limited).
  progress.Finish(absl::StrFormat("loss %.4f, %.1f img/s", smoothed,
                                  window_seconds > 0 ? window_samples / window_seconds : 0.0));
  return absl::OkStatus();
}

}  // namespace dd::training
