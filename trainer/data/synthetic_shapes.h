// Captioned synthetic images: one coloured shape on a coloured background,
// captioned "a red circle on a blue background". The embedded demo and the
// tests train and serve these, so nothing has to be downloaded.
#ifndef TRAINER_DATA_SYNTHETIC_SHAPES_H_
#define TRAINER_DATA_SYNTHETIC_SHAPES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/image/image_codec.h"

namespace dd {

struct ShapeSample {
  RgbImage image;
  std::string caption;
};

// Renders sample `index` of the dataset with `seed` at `width`x`height`.
// The same arguments always give the same pixels and caption. Shape and
// background colours always differ; the shape covers 30-60% of the shorter
// side and is anti-aliased at its edges.
ShapeSample RenderShapeSample(uint64_t seed, uint64_t index, int width, int height);

// Every word the captions use ("a", "an", colours, shapes, "on",
// "background"): the demo's tokenizer makes each a single token.
std::vector<std::string> ShapeVocabulary();

}  // namespace dd

#endif  // TRAINER_DATA_SYNTHETIC_SHAPES_H_
