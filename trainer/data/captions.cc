#include "trainer/data/captions.h"

#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace dd::data {

uint64_t SplitMix::Next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string AugmentCaption(const std::string& caption, const CaptionOptions& options,
                           SplitMix& rng) {
  // Draw both numbers every time so one option does not shift the other's
  // random stream.
  const double drop = rng.Uniform();
  SplitMix shuffle_rng(rng.Next(), 0);
  if (options.dropout > 0 && drop < options.dropout) return "";
  if (!options.shuffle_tags) return caption;
  std::vector<std::string> tags;
  for (absl::string_view t : absl::StrSplit(caption, ',')) {
    absl::string_view s = absl::StripAsciiWhitespace(t);
    if (!s.empty()) tags.emplace_back(s);
  }
  size_t keep = std::min<size_t>(std::max(options.keep_tags, 0), tags.size());
  for (size_t i = tags.size(); i > keep + 1; --i) {  // Fisher-Yates over tags[keep..]
    size_t j = keep + shuffle_rng.Below(i - keep);
    std::swap(tags[i - 1], tags[j]);
  }
  return absl::StrJoin(tags, ", ");
}

}  // namespace dd::data
