// Codecs that compress float32 vectors for the averaging wire (and for the
// optimizer's quantized state). Pure C++: no gRPC or libtorch types.
//
// Wire layouts (little-endian; also documented in protos/averaging.proto):
//   NONE            float32[n]
//   FP16            IEEE binary16[n], values clamped to +-65504
//   BF16            bfloat16[n] (round to nearest even)
//   UNIFORM_8BIT    float32 codebook[256] | uint8 index[n]
//                   bins of 6 sigma / 256 around the mean; codebook = the
//                   mean of the values in each bin (hivemind's scheme)
//   BLOCKWISE_8BIT  float32 absmax[ceil(n / 4096)] | uint8 index[n]
//                   index into the fixed signed "dynamic" code of 256
//                   values (bitsandbytes' create_dynamic_map), per block of
//                   4096 values scaled by the block's absolute maximum
//   TOPK_8BIT       float32 scale[blocks] | uint16 position[K] | uint8 index[K]
//                   per block of 4096 values, its min(64, block length)
//                   largest magnitudes (ties: lower position) at their
//                   positions within the block (strictly increasing), as
//                   dynamic-code indices scaled by the block's largest
//                   magnitude; the other values are 0. K is the sum over the
//                   blocks. Sparse: 1/21 of BLOCKWISE_8BIT's bytes, only with
//                   error feedback (what it drops is sent later).
// The element count n travels beside the bytes (in the frame), so every
// layout has an exact expected size and decoders reject anything else.
#ifndef TRAINER_AVERAGING_CODEC_H_
#define TRAINER_AVERAGING_CODEC_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dd::averaging {

// Values match distdiff.averaging.v1.Codec.
enum class CodecId : int {
  kNone = 0,
  kFp16 = 1,
  kBf16 = 2,
  kUniform8Bit = 3,
  kBlockwise8Bit = 4,
  kTopK8Bit = 5,
};

inline constexpr size_t kBlockwiseBlockSize = 4096;
inline constexpr size_t kTopKPerBlock = 64;  // 1.56 % of each block
inline constexpr int kNumCodecs = 6;

// Largest element count any decoder accepts in one buffer (2^31 - 1): frames
// are far smaller; this only rules out overflow in size arithmetic.
inline constexpr uint64_t kMaxCodecElements = (uint64_t{1} << 31) - 1;

class Codec {
 public:
  virtual ~Codec() = default;
  virtual CodecId id() const = 0;
  virtual const char* name() const = 0;

  // Exact size in bytes of the encoding of `n` values.
  virtual size_t EncodedSize(size_t n) const = 0;

  // Appends the encoding of `values[0..n)` to `out`. The values must be
  // finite (check with AllFinite first; the averager refuses non-finite
  // input before encoding).
  virtual void Encode(const float* values, size_t n, std::string* out) const = 0;

  // Decodes exactly `n` values from `bytes` into `out[0..n)`. InvalidArgument
  // when bytes.size() != EncodedSize(n), n > kMaxCodecElements, or the buffer
  // holds non-finite numbers (a NaN codebook entry, an infinite scale).
  // Never reads outside `bytes`.
  virtual absl::Status Decode(absl::string_view bytes, size_t n, float* out) const = 0;
};

// The codec with this id; InvalidArgument for an unknown id (e.g. from the
// network).
absl::StatusOr<const Codec*> GetCodec(int id);
const Codec& CodecFor(CodecId id);

// The codec whose name() is `name` ("none", "fp16", "bf16", "uniform8bit",
// "blockwise8bit", "topk8bit"); InvalidArgument naming it otherwise (flags,
// run configs).
absl::StatusOr<CodecId> CodecIdNamed(absl::string_view name);

// hivemind's SizeAdaptiveCompression: tensors with at least `threshold`
// elements use `large`, smaller ones `small`. The decision is made on the
// whole tensor, so all parts of a tensor use one codec.
struct AdaptiveCodecChoice {
  size_t threshold = (1 << 16) + 1;
  CodecId small = CodecId::kFp16;
  CodecId large = CodecId::kBlockwise8Bit;
  CodecId For(size_t tensor_elements) const {
    return tensor_elements >= threshold ? large : small;
  }
};

// True when every value is finite.
bool AllFinite(const float* values, size_t n);

// The 256 values of the signed dynamic code, sorted ascending (max +1.0,
// min -0.99296875, 0 included).
const std::array<float, 256>& DynamicCode();

// Scalar conversions (exposed for tests and the optimizer).
uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);
uint16_t FloatToBf16(float f);
float Bf16ToFloat(uint16_t b);

}  // namespace dd::averaging

#endif  // TRAINER_AVERAGING_CODEC_H_
