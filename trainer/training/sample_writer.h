// SampleWriter: the sample grids a run writes as it trains, so people can
// see what it learns: one image per prompt from the current weights, with
// seeds fixed across the run (grids of different steps are comparable),
// saved as samples/step-<step>.png beside samples/prompts.txt and added to
// TensorBoard.
#ifndef TRAINER_TRAINING_SAMPLE_WRITER_H_
#define TRAINER_TRAINING_SAMPLE_WRITER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/data/sample_source.h"
#include "trainer/model/diffusers_model.h"
#include "trainer/training/step_recorder.h"

namespace dd::training {

struct SampleWriterOptions {
  std::string output_dir;
  std::vector<std::string> prompts;
  int steps = 20;
  double guidance = 7.5;
  int resolution = 512;  // rounded down to what the model can draw
};

class SampleWriter {
 public:
  // `recorder` (may be null) receives each grid as a TensorBoard image;
  // it must outlive this object.
  SampleWriter(SampleWriterOptions options, StepRecorder* recorder);

  bool has_prompts() const { return !options_.prompts.empty(); }
  const std::vector<std::string>& prompts() const { return options_.prompts; }

  // Draws every prompt with `model` and writes the grid for `step`; returns
  // its path. FailedPrecondition without prompts; the pipeline's errors.
  absl::StatusOr<std::string> Write(model::DiffusersModel* model, int64_t step) const;

 private:
  // Fixed after construction.
  const SampleWriterOptions options_;
  StepRecorder* const recorder_;
};

// Up to `max` distinct cleaned captions of `samples`, in order: the prompts
// of a run that was given none.
std::vector<std::string> PromptsFromCaptions(const std::vector<data::SampleRef>& samples,
                                             size_t max = 4);

}  // namespace dd::training

#endif  // TRAINER_TRAINING_SAMPLE_WRITER_H_
