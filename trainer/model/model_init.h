// Writes a Stable Diffusion model folder in diffusers layout with freshly
// initialised weights, for a named size: the embedded demo trains one
// without downloading anything, and benchmarks use the real SD 1.5 shapes.
//
// Initialisation follows PyTorch's defaults for the module types (what
// `UNet2DConditionModel(**config)` gives): convolution and linear weights and
// biases uniform in +-1/sqrt(fan_in), norm scales 1 and shifts 0, CLIP
// embeddings normal with std 0.02. The tokenizer is a CLIP BPE vocabulary
// built from `words` (byte alphabet + one merge chain per word), so every
// text still tokenizes; listed words become single tokens.
#ifndef TRAINER_MODEL_MODEL_INIT_H_
#define TRAINER_MODEL_MODEL_INIT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dd::model {

// Sizes: "tiny" (64 px, a few MB, the demo), "small" (256 px), "sd15"
// (the SD 1.5 shapes, 1.07 G parameters; several GB).
std::vector<std::string> ModelSizes();

// The UNet's config.json for a named size (benchmarks build the UNet from
// it with random weights). InvalidArgument for an unknown size.
absl::StatusOr<std::string> UNetConfigJson(const std::string& size);

// Writes model_index.json, unet/, vae/, text_encoder/, tokenizer/ and
// scheduler/ to `dir`; the scheduler's prediction_type is `prediction_type`
// ("epsilon" or "v_prediction": a model trained from scratch learns the
// picture's layout and colours much sooner with v, whose target at high
// noise is the image rather than the noise). InvalidArgument for an
// unknown size or prediction type.
absl::Status WriteInitialModel(const std::string& dir, const std::string& size, uint64_t seed,
                               const std::vector<std::string>& words,
                               const std::string& prediction_type = "epsilon");

}  // namespace dd::model

#endif  // TRAINER_MODEL_MODEL_INIT_H_
