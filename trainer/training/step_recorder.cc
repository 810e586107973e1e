#include "trainer/training/step_recorder.h"

#include "absl/strings/str_cat.h"

namespace dd::training {

absl::StatusOr<std::unique_ptr<StepRecorder>> StepRecorder::Open(const std::string& jsonl_path,
                                                                 const std::string& events_dir,
                                                                 std::string prefix) {
  auto jsonl = metrics::JsonlWriter::Open(jsonl_path);
  if (!jsonl.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("metrics file ", jsonl_path, ": ", jsonl.status().message()));
  }
  auto events = metrics::EventWriter::Create(events_dir);
  if (!events.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("TensorBoard folder ", events_dir, ": ", events.status().message()));
  }
  return std::unique_ptr<StepRecorder>(
      new StepRecorder(std::move(*jsonl), std::move(*events), std::move(prefix)));
}

StepRecorder::StepRecorder(std::unique_ptr<metrics::JsonlWriter> jsonl, std::unique_ptr<metrics::EventWriter> events,
                           std::string prefix)
    : jsonl_(std::move(jsonl)), events_(std::move(events)), prefix_(std::move(prefix)) {}

void StepRecorder::AddSink(
    std::function<void(int64_t step, const std::map<std::string, double>& row)> sink) {
  sinks_.push_back(std::move(sink));
}

absl::Status StepRecorder::Record(int64_t step, const std::map<std::string, double>& row) {
  for (const auto& sink : sinks_) sink(step, row);
  if (absl::Status s = jsonl_->Write(row); !s.ok()) return s;
  for (const auto& [name, value] : row) {
    if (name == "step" || name == "epoch") continue;
    if (absl::Status s = events_->AddScalar(prefix_ + name, step, value); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status StepRecorder::AddImage(const std::string& tag, int64_t step, const RgbImage& image) {
  return events_->AddImage(tag, step, image);
}

absl::Status StepRecorder::Flush() { return events_->Flush(); }

}  // namespace dd::training
