// StepRecorder: where a run's numbers go, step by step: one JSON object per
// line in a .jsonl file (for scripts) and the same numbers as TensorBoard
// scalars under a tag prefix, plus images (sample grids) for TensorBoard.
#ifndef TRAINER_TRAINING_STEP_RECORDER_H_
#define TRAINER_TRAINING_STEP_RECORDER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/image/image_codec.h"
#include "common/metrics/event_writer.h"

namespace dd::training {

class StepRecorder {
 public:
  // Appends to `jsonl_path` and writes a new event file under `events_dir`;
  // scalars are tagged `prefix` + name ("train/loss"). FailedPrecondition
  // naming the path when either cannot be opened.
  static absl::StatusOr<std::unique_ptr<StepRecorder>> Open(const std::string& jsonl_path,
                                                            const std::string& events_dir,
                                                            std::string prefix);

  // Writes `row` (which should hold "step") to the .jsonl file and each
  // number but "step" and "epoch" as a scalar at `step`.
  absl::Status Record(int64_t step, const std::map<std::string, double>& row);
  absl::Status AddImage(const std::string& tag, int64_t step, const RgbImage& image);
  // Also hands every recorded row to `sink` (e.g. the Prometheus gauges of
  // step_metrics.h). Call before the first Record.
  void AddSink(std::function<void(int64_t step, const std::map<std::string, double>& row)> sink);
  absl::Status Flush();

 private:
  StepRecorder(std::unique_ptr<metrics::JsonlWriter> jsonl, std::unique_ptr<metrics::EventWriter> events,
               std::string prefix);

  // Fixed after construction.
  const std::unique_ptr<metrics::JsonlWriter> jsonl_;
  const std::unique_ptr<metrics::EventWriter> events_;
  const std::string prefix_;
  std::vector<std::function<void(int64_t, const std::map<std::string, double>&)>> sinks_;
};

}  // namespace dd::training

#endif  // TRAINER_TRAINING_STEP_RECORDER_H_
