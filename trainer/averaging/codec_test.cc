// Error bounds per codec on random, heavy-tailed, all-zero and constant
// vectors; malformed buffers rejected.
#include "trainer/averaging/codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace dd::averaging {
namespace {

std::vector<float> Normal(size_t n, uint64_t seed, float sigma = 1.0f, float mean = 0.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(mean, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<float> HeavyTailed(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::cauchy_distribution<float> d(0.0f, 1e-3f);
  std::vector<float> v(n);
  for (auto& x : v) x = std::clamp(d(rng), -1e4f, 1e4f);
  return v;
}

std::vector<float> RoundTrip(CodecId id, const std::vector<float>& v) {
  const Codec& c = CodecFor(id);
  std::string bytes;
  c.Encode(v.data(), v.size(), &bytes);
  EXPECT_EQ(bytes.size(), c.EncodedSize(v.size()));
  std::vector<float> out(v.size());
  absl::Status s = c.Decode(bytes, v.size(), out.data());
  EXPECT_TRUE(s.ok()) << c.name() << ": " << s;
  return out;
}

TEST(Codec, NoneIsExact) {
  auto v = HeavyTailed(10001, 1);
  EXPECT_EQ(RoundTrip(CodecId::kNone, v), v);
}

TEST(Codec, HalfConversionIsExactOnEveryHalfAndRoundsToNearest) {
  for (uint32_t h = 0; h < 65536; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;  // inf / NaN
    float f = HalfToFloat(static_cast<uint16_t>(h));
    ASSERT_EQ(FloatToHalf(f), h) << h;
  }
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> d(-70000.0f, 70000.0f);
  for (int i = 0; i < 100000; ++i) {
    float x = d(rng) * (i % 7 == 0 ? 1e-6f : 1.0f);
    if (std::fabs(x) > 65504) continue;
    float y = HalfToFloat(FloatToHalf(x));
    // No half value lies strictly closer to x than the one chosen.
    uint16_t h = FloatToHalf(x);
    for (int delta : {-1, 1}) {
      float other = HalfToFloat(static_cast<uint16_t>(h + delta));
      if (std::isfinite(other) && (h & 0x7fff) != 0) {
        ASSERT_LE(std::fabs(y - x), std::fabs(other - x)) << x;
      }
    }
  }
}

TEST(Codec, Fp16BulkPathMatchesTheScalarConversion) {
  auto v = HeavyTailed(100003, 9);
  for (size_t i = 0; i < v.size(); i += 7) v[i] *= 1e-4f;  // subnormal halves too
  std::string bytes;
  CodecFor(CodecId::kFp16).Encode(v.data(), v.size(), &bytes);
  const uint16_t* h = reinterpret_cast<const uint16_t*>(bytes.data());
  for (size_t i = 0; i < v.size(); ++i) {
    ASSERT_EQ(h[i], FloatToHalf(std::clamp(v[i], -65504.0f, 65504.0f))) << v[i];
  }
  auto out = RoundTrip(CodecId::kFp16, v);
  for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(out[i], HalfToFloat(h[i]));
}

TEST(Codec, BlockwiseTableLookupPicksTheNearestCodeValue) {
  const auto& code = DynamicCode();
  std::mt19937 rng(10);
  std::vector<float> v(kBlockwiseBlockSize);
  for (auto& x : v) {
    x = std::uniform_real_distribution<float>(-1, 1)(rng);
    if (rng() % 3 == 0) x *= 1e-3f;
    if (rng() % 5 == 0) x *= 1e-4f;
  }
  v[0] = 1.0f;  // absmax 1: indices refer to x itself
  std::string bytes;
  CodecFor(CodecId::kBlockwise8Bit).Encode(v.data(), v.size(), &bytes);
  const uint8_t* idx = reinterpret_cast<const uint8_t*>(bytes.data() + 4);
  for (size_t i = 0; i < v.size(); ++i) {
    float best = INFINITY;
    for (float c : code) best = std::min(best, std::fabs(c - v[i]));
    ASSERT_LE(std::fabs(code[idx[i]] - v[i]), best * (1 + 1e-6f) + 1e-12f) << v[i];
  }
}

TEST(Codec, Fp16RelativeErrorAndClamp) {
  auto v = Normal(20000, 2, 100.0f);
  v.push_back(1e6f);
  v.push_back(-1e6f);
  auto out = RoundTrip(CodecId::kFp16, v);
  for (size_t i = 0; i + 2 < v.size(); ++i) {
    if (std::fabs(v[i]) > 6.1e-5f) {
      EXPECT_LE(std::fabs(out[i] - v[i]), std::fabs(v[i]) * 4.9e-4f);
    }
  }
  EXPECT_EQ(out[v.size() - 2], 65504.0f);
  EXPECT_EQ(out[v.size() - 1], -65504.0f);
}

TEST(Codec, Bf16RelativeError) {
  auto v = HeavyTailed(20000, 4);
  auto out = RoundTrip(CodecId::kBf16, v);
  for (size_t i = 0; i < v.size(); ++i) {
    EXPECT_LE(std::fabs(out[i] - v[i]), std::fabs(v[i]) * (1.0f / 256)) << v[i];
  }
}

TEST(Codec, Uniform8BitErrorWithinOneBinInsideThreeSigma) {
  for (float mean : {0.0f, 5.0f}) {
    auto v = Normal(50000, 5, 2.0f, mean);
    auto out = RoundTrip(CodecId::kUniform8Bit, v);
    double m = 0, sq = 0;
    for (float x : v) m += x;
    m /= v.size();
    for (float x : v) sq += (x - m) * (x - m);
    double sigma = std::sqrt(sq / (v.size() - 1));
    double bin = 6 * sigma / 256;
    double mse_inside = 0, mse = 0;
    size_t inside = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      double e2 = (out[i] - v[i]) * (out[i] - v[i]);
      if (std::fabs(v[i] - m) < 2.9 * sigma) {
        EXPECT_LE(std::fabs(out[i] - v[i]), bin) << v[i];
        mse_inside += e2;
        ++inside;
      }
      mse += e2;
    }
    // Bin-mean decoding: RMS error about bin/sqrt(12) inside the range; the
    // values beyond +-3 sigma are clamped (the scheme's design), which keeps
    // the overall RMS error under 2% of sigma for normal data.
    EXPECT_LT(std::sqrt(mse_inside / inside), bin * 0.35);
    EXPECT_LT(std::sqrt(mse / v.size()), 0.02 * sigma);
  }
}

TEST(Codec, Blockwise8BitErrorBoundedByTheCodeSpacing) {
  const auto& code = DynamicCode();
  EXPECT_EQ(code.front(), -0.99296875f);
  EXPECT_EQ(code.back(), 1.0f);
  float max_gap = 0;
  for (size_t i = 1; i < code.size(); ++i) max_gap = std::max(max_gap, code[i] - code[i - 1]);
  for (const auto& v : {Normal(3 * kBlockwiseBlockSize + 17, 6), HeavyTailed(20000, 7)}) {
    auto out = RoundTrip(CodecId::kBlockwise8Bit, v);
    for (size_t blk = 0; blk * kBlockwiseBlockSize < v.size(); ++blk) {
      size_t lo = blk * kBlockwiseBlockSize, hi = std::min(v.size(), lo + kBlockwiseBlockSize);
      float absmax = 0;
      for (size_t i = lo; i < hi; ++i) absmax = std::max(absmax, std::fabs(v[i]));
      for (size_t i = lo; i < hi; ++i) {
        ASSERT_LE(std::fabs(out[i] - v[i]), absmax * max_gap / 2 * 1.0001f) << i;
      }
      // The block maximum itself is exact (code holds +1.0; -absmax maps
      // to the nearest negative value).
    }
  }
}

TEST(Codec, TopK8BitKeepsEachBlocksLargestMagnitudesAndZeroesTheRest) {
  const auto& code = DynamicCode();
  float max_gap = 0;
  for (size_t i = 1; i < code.size(); ++i) max_gap = std::max(max_gap, code[i] - code[i - 1]);
  // Two full blocks and a tail shorter than kTopKPerBlock.
  auto v = Normal(2 * kBlockwiseBlockSize + 40, 9);
  v[5] = -30.0f;  // a block maximum of either sign is kept
  v[kBlockwiseBlockSize + 7] = 25.0f;
  const Codec& c = CodecFor(CodecId::kTopK8Bit);
  EXPECT_EQ(c.EncodedSize(v.size()), 3 * 4 + (2 * kTopKPerBlock + 40) * 3);
  auto out = RoundTrip(CodecId::kTopK8Bit, v);
  for (size_t blk = 0; blk * kBlockwiseBlockSize < v.size(); ++blk) {
    size_t lo = blk * kBlockwiseBlockSize, hi = std::min(v.size(), lo + kBlockwiseBlockSize);
    std::vector<float> mags;
    float absmax = 0;
    for (size_t i = lo; i < hi; ++i) {
      mags.push_back(std::fabs(v[i]));
      absmax = std::max(absmax, std::fabs(v[i]));
    }
    std::sort(mags.rbegin(), mags.rend());
    const size_t k = std::min(kTopKPerBlock, hi - lo);
    const float threshold = mags[k - 1];
    size_t kept = 0;
    for (size_t i = lo; i < hi; ++i) {
      if (std::fabs(v[i]) >= threshold) {
        ++kept;
        ASSERT_LE(std::fabs(out[i] - v[i]), absmax * max_gap / 2 * 1.0001f) << i;
      } else {
        ASSERT_EQ(out[i], 0.0f) << i;
      }
    }
    EXPECT_EQ(kept, k) << "block " << blk;  // no ties in normal draws
  }
  EXPECT_EQ(out[kBlockwiseBlockSize + 7], 25.0f);  // +1.0 is in the code
  // An all-zero block decodes to zeros (positions 0..k-1, scale 0).
  std::vector<float> zeros(5000, 0.0f);
  EXPECT_EQ(RoundTrip(CodecId::kTopK8Bit, zeros), zeros);
  // Ties keep the lower positions, so the encoding is a function of the
  // values alone (every member decodes what its reducer meant).
  std::vector<float> constant(100, 0.5f);
  auto tied = RoundTrip(CodecId::kTopK8Bit, constant);
  for (size_t i = 0; i < 100; ++i) EXPECT_EQ(tied[i], i < kTopKPerBlock ? 0.5f : 0.0f) << i;
}

TEST(Codec, TopK8BitRefusesPositionsOutOfOrderOrOutsideTheBlock) {
  const Codec& c = CodecFor(CodecId::kTopK8Bit);
  auto v = Normal(100, 10);
  std::string good;
  c.Encode(v.data(), v.size(), &good);
  std::vector<float> out(100);
  ASSERT_TRUE(c.Decode(good, 100, out.data()).ok());
  auto set_position = [&](size_t j, uint16_t pos) {
    std::string bad = good;
    std::memcpy(bad.data() + 4 + j * 2, &pos, 2);
    return bad;
  };
  uint16_t first;
  std::memcpy(&first, good.data() + 4, 2);
  EXPECT_FALSE(c.Decode(set_position(1, first), 100, out.data()).ok());  // a repeat
  EXPECT_FALSE(c.Decode(set_position(kTopKPerBlock - 1, 100), 100, out.data()).ok());  // past the end
  EXPECT_FALSE(c.Decode(set_position(kTopKPerBlock - 1, 65535), 100, out.data()).ok());
}

TEST(Codec, AllZeroAndConstantVectors) {
  for (CodecId id : {CodecId::kNone, CodecId::kFp16, CodecId::kBf16, CodecId::kUniform8Bit,
                     CodecId::kBlockwise8Bit}) {
    std::vector<float> zeros(5000, 0.0f);
    EXPECT_EQ(RoundTrip(id, zeros), zeros) << CodecFor(id).name();
    std::vector<float> constant(5000, 0.375f);
    auto out = RoundTrip(id, constant);
    for (float x : out) ASSERT_NEAR(x, 0.375f, 0.375f * 0.004f) << CodecFor(id).name();
    std::vector<float> one = {-2.5f};
    auto single = RoundTrip(id, one);
    ASSERT_NEAR(single[0], -2.5f, 2.5f * 0.01f) << CodecFor(id).name();
    std::vector<float> empty;
    EXPECT_TRUE(RoundTrip(id, empty).empty());
  }
}

TEST(Codec, DecodersRejectMalformedBuffers) {
  std::vector<float> out(100);
  for (int id = 0; id < kNumCodecs; ++id) {
    const Codec* c = *GetCodec(id);
    std::string good;
    auto v = Normal(100, 8);
    c->Encode(v.data(), 100, &good);
    EXPECT_TRUE(c->Decode(good, 100, out.data()).ok());
    EXPECT_FALSE(c->Decode(good.substr(1), 100, out.data()).ok()) << c->name();
    EXPECT_FALSE(c->Decode(good + "x", 100, out.data()).ok()) << c->name();
    EXPECT_FALSE(c->Decode(good, 99, out.data()).ok()) << c->name();
    EXPECT_FALSE(c->Decode("", 1ull << 40, out.data()).ok()) << c->name();
  }
  EXPECT_FALSE(GetCodec(kNumCodecs).ok());
  EXPECT_FALSE(GetCodec(-1).ok());
  // Non-finite payloads: a NaN float, an fp16 infinity, a NaN codebook entry,
  // an infinite block scale.
  float nan = std::nanf("");
  std::string bytes(reinterpret_cast<const char*>(&nan), 4);
  EXPECT_FALSE(CodecFor(CodecId::kNone).Decode(bytes, 1, out.data()).ok());
  EXPECT_FALSE(CodecFor(CodecId::kFp16).Decode(std::string("\x00\x7c", 2), 1, out.data()).ok());
  std::string codebook(256 * 4 + 1, '\0');
  std::memcpy(codebook.data(), &nan, 4);
  EXPECT_FALSE(CodecFor(CodecId::kUniform8Bit).Decode(codebook, 1, out.data()).ok());
  float inf = INFINITY;
  std::string blockwise(4 + 1, '\0');
  std::memcpy(blockwise.data(), &inf, 4);
  EXPECT_FALSE(CodecFor(CodecId::kBlockwise8Bit).Decode(blockwise, 1, out.data()).ok());
  std::string topk(4 + 3, '\0');
  std::memcpy(topk.data(), &nan, 4);
  EXPECT_FALSE(CodecFor(CodecId::kTopK8Bit).Decode(topk, 1, out.data()).ok());
}

TEST(Codec, AdaptiveChoiceAndFiniteCheck) {
  AdaptiveCodecChoice choice;
  EXPECT_EQ(choice.For(1000), CodecId::kFp16);
  EXPECT_EQ(choice.For(1 << 20), CodecId::kBlockwise8Bit);
  std::vector<float> v = {1, 2, 3};
  EXPECT_TRUE(AllFinite(v.data(), 3));
  v[1] = INFINITY;
  EXPECT_FALSE(AllFinite(v.data(), 3));
  v[1] = std::nanf("");
  EXPECT_FALSE(AllFinite(v.data(), 3));
}

}  // namespace
}  // namespace dd::averaging
