// Caption augmentation of the kind SD fine-tuners use: caption dropout (an
// empty caption with probability p, which teaches the unconditional
// prediction that classifier-free guidance needs; the prototype's "ucg" of
// 0.1) and shuffling of comma-separated tags while keeping the first N
// (kohya's --shuffle_caption / --keep_tokens). Deterministic for a given
// random stream. Pure.
#ifndef TRAINER_DATA_CAPTIONS_H_
#define TRAINER_DATA_CAPTIONS_H_

#include <cstdint>
#include <string>

namespace dd::data {

struct CaptionOptions {
  double dropout = 0.0;       // probability of training on ""
  bool shuffle_tags = false;  // shuffle "a, b, c" tags
  int keep_tags = 0;          // leading tags that stay in place
};

// A small deterministic generator (splitmix64): the same (seed, stream)
// gives the same numbers on every platform, unlike std:: distributions.
class SplitMix {
 public:
  SplitMix(uint64_t seed, uint64_t stream) : state_(seed * 0x9E3779B97F4A7C15ull ^ (stream + 1) * 0xBF58476D1CE4E5B9ull) {}
  uint64_t Next();
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }  // [0, 1)
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : Next() % n; }

 private:
  uint64_t state_;
};

// Applies `options` to `caption` drawing from `rng`.
std::string AugmentCaption(const std::string& caption, const CaptionOptions& options, SplitMix& rng);

}  // namespace dd::data

#endif  // TRAINER_DATA_CAPTIONS_H_
