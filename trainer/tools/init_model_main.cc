// init_model: writes a diffusers model folder with freshly initialised
// weights for a named size (tiny, small, sd15, tiny-sdxl). The embedded demo starts
// from `init_model --size=tiny`.
//
//   bazel run //trainer/tools:init_model -- --size=tiny --out=/tmp/tiny-model
#include <gflags/gflags.h>

#include <iostream>

#include "absl/strings/str_split.h"
#include "common/init/init.h"
#include "trainer/data/synthetic_shapes.h"
#include "trainer/model/model_init.h"

DEFINE_string(size, "tiny", "tiny, small, sd15 or tiny-sdxl (two text encoders, the text_time UNet).");
DEFINE_string(out, "", "Folder to write.");
DEFINE_uint64(seed, 0, "Seed of the initial weights.");
DEFINE_string(prediction_type, "epsilon", "The scheduler's prediction_type: epsilon or v_prediction.");
DEFINE_string(words, "", "Comma-separated words made single tokens (default: the synthetic "
                         "shapes vocabulary).");

namespace {

absl::Status Run(int, char**) {
  if (FLAGS_out.empty()) return absl::InvalidArgumentError("--out is required");
  std::vector<std::string> words;
  if (FLAGS_words.empty()) {
    words = dd::ShapeVocabulary();
  } else {
    words = absl::StrSplit(FLAGS_words, ',', absl::SkipEmpty());
  }
  if (absl::Status s = dd::model::WriteInitialModel(FLAGS_out, FLAGS_size, FLAGS_seed, words,
                                                      FLAGS_prediction_type); !s.ok()) {
    return s;
  }
  std::cout << "wrote a " << FLAGS_size << " model to " << FLAGS_out << "\n";
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) { return dd::RunMain("init_model --size=tiny --out=DIR", argc, argv, Run); }
