#include "trainer/averaging/codec.h"

#include <algorithm>
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/thread/parallel_for.h"

namespace dd::averaging {
namespace {

// Little-endian hosts only (x86-64, aarch64); checked at compile time.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "codecs assume little-endian");

absl::Status CheckSize(const Codec& c, absl::string_view bytes, size_t n) {
  if (n > kMaxCodecElements) {
    return absl::InvalidArgumentError(absl::StrCat(c.name(), ": ", n, " elements is too many"));
  }
  if (bytes.size() != c.EncodedSize(n)) {
    return absl::InvalidArgumentError(absl::StrCat(c.name(), ": ", bytes.size(),
                                                   " bytes cannot hold ", n, " values (expected ",
                                                   c.EncodedSize(n), ")"));
  }
  return absl::OkStatus();
}

absl::Status NonFinite(const Codec& c) {
  return absl::InvalidArgumentError(absl::StrCat(c.name(), ": buffer decodes to non-finite values"));
}

class NoneCodec : public Codec {
 public:
  CodecId id() const override { return CodecId::kNone; }
  const char* name() const override { return "none"; }
  size_t EncodedSize(size_t n) const override { return n * 4; }
  void Encode(const float* v, size_t n, std::string* out) const override {
    out->append(reinterpret_cast<const char*>(v), n * 4);
  }
  absl::Status Decode(absl::string_view b, size_t n, float* out) const override {
    if (absl::Status s = CheckSize(*this, b, n); !s.ok()) return s;
    std::memcpy(out, b.data(), n * 4);
    if (!AllFinite(out, n)) return NonFinite(*this);
    return absl::OkStatus();
  }
};

#if defined(__x86_64__)
// Hardware conversions (F16C, on every x86-64 CPU since 2012), chosen at run
// time; both round to nearest even, exactly like the scalar functions.
__attribute__((target("avx,f16c"))) void EncodeHalfF16c(const float* v, size_t n,
                                                         uint16_t* dst) {
  size_t i = 0;
  const __m256 hi = _mm256_set1_ps(65504.0f), lo = _mm256_set1_ps(-65504.0f);
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_min_ps(_mm256_max_ps(_mm256_loadu_ps(v + i), lo), hi);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) dst[i] = FloatToHalf(std::clamp(v[i], -65504.0f, 65504.0f));
}

__attribute__((target("avx,f16c"))) bool DecodeHalfF16c(const uint16_t* src, size_t n,
                                                         float* out) {
  size_t i = 0;
  __m128i bad = _mm_setzero_si128();
  const __m128i exp_mask = _mm_set1_epi16(0x7c00);
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    bad = _mm_or_si128(bad, _mm_cmpeq_epi16(_mm_and_si128(h, exp_mask), exp_mask));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
  if (_mm_movemask_epi8(bad) != 0) return false;
  for (; i < n; ++i) {
    if ((src[i] & 0x7c00) == 0x7c00) return false;
    out[i] = HalfToFloat(src[i]);
  }
  return true;
}

bool HasF16c() {
  static const bool has = [] {
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
    const unsigned kOsxsave = 1u << 27, kAvx = 1u << 28, kF16c = 1u << 29;
    if ((ecx & (kOsxsave | kAvx | kF16c)) != (kOsxsave | kAvx | kF16c)) return false;
    unsigned lo, hi;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 6) == 6;  // the OS saves the YMM registers
  }();
  return has;
}
#endif

class Fp16Codec : public Codec {
 public:
  CodecId id() const override { return CodecId::kFp16; }
  const char* name() const override { return "fp16"; }
  size_t EncodedSize(size_t n) const override { return n * 2; }
  void Encode(const float* v, size_t n, std::string* out) const override {
    size_t at = out->size();
    out->resize(at + n * 2);
    uint16_t* dst = reinterpret_cast<uint16_t*>(out->data() + at);
#if defined(__x86_64__)
    if (HasF16c()) {
      EncodeHalfF16c(v, n, dst);
      return;
    }
#endif
    for (size_t i = 0; i < n; ++i) dst[i] = FloatToHalf(std::clamp(v[i], -65504.0f, 65504.0f));
  }
  absl::Status Decode(absl::string_view b, size_t n, float* out) const override {
    if (absl::Status s = CheckSize(*this, b, n); !s.ok()) return s;
#if defined(__x86_64__)
    if (HasF16c()) {
      // The buffer may be unaligned; the vector loads are unaligned anyway.
      if (!DecodeHalfF16c(reinterpret_cast<const uint16_t*>(b.data()), n, out)) {
        return NonFinite(*this);
      }
      return absl::OkStatus();
    }
#endif
    const unsigned char* src = reinterpret_cast<const unsigned char*>(b.data());
    for (size_t i = 0; i < n; ++i) {
      uint16_t h = static_cast<uint16_t>(src[2 * i] | (src[2 * i + 1] << 8));
      if ((h & 0x7c00) == 0x7c00) return NonFinite(*this);  // inf or NaN
      out[i] = HalfToFloat(h);
    }
    return absl::OkStatus();
  }
};

class Bf16Codec : public Codec {
 public:
  CodecId id() const override { return CodecId::kBf16; }
  const char* name() const override { return "bf16"; }
  size_t EncodedSize(size_t n) const override { return n * 2; }
  void Encode(const float* v, size_t n, std::string* out) const override {
    size_t at = out->size();
    out->resize(at + n * 2);
    uint16_t* dst = reinterpret_cast<uint16_t*>(out->data() + at);
    for (size_t i = 0; i < n; ++i) dst[i] = FloatToBf16(v[i]);
  }
  absl::Status Decode(absl::string_view b, size_t n, float* out) const override {
    if (absl::Status s = CheckSize(*this, b, n); !s.ok()) return s;
    const unsigned char* src = reinterpret_cast<const unsigned char*>(b.data());
    for (size_t i = 0; i < n; ++i) {
      uint16_t h = static_cast<uint16_t>(src[2 * i] | (src[2 * i + 1] << 8));
      if ((h & 0x7f80) == 0x7f80) return NonFinite(*this);
      out[i] = Bf16ToFloat(h);
    }
    return absl::OkStatus();
  }
};

class Uniform8BitCodec : public Codec {
 public:
  CodecId id() const override { return CodecId::kUniform8Bit; }
  const char* name() const override { return "uniform8bit"; }
  size_t EncodedSize(size_t n) const override { return 256 * 4 + n; }

  void Encode(const float* v, size_t n, std::string* out) const override {
    double sum = 0;
    for (size_t i = 0; i < n; ++i) sum += v[i];
    double mean = n ? sum / n : 0;
    double sq = 0;
    for (size_t i = 0; i < n; ++i) sq += (v[i] - mean) * (v[i] - mean);
    double std = n > 1 ? std::sqrt(sq / (n - 1)) : 0;
    double scale = 6.0 * std / 256.0;
    std::vector<uint8_t> idx(n);
    std::array<double, 256> bin_sum{};
    std::array<uint64_t, 256> bin_count{};
    for (size_t i = 0; i < n; ++i) {
      int b = 128;
      if (scale > 0 && std::isfinite(scale)) {
        double q = std::nearbyint((v[i] - mean) / scale) + 128;
        b = static_cast<int>(std::clamp(q, 0.0, 255.0));
      }
      idx[i] = static_cast<uint8_t>(b);
      bin_sum[b] += v[i];
      bin_count[b]++;
    }
    std::array<float, 256> codebook{};
    for (int b = 0; b < 256; ++b) {
      codebook[b] = bin_count[b] ? static_cast<float>(bin_sum[b] / bin_count[b]) : 0.0f;
    }
    out->append(reinterpret_cast<const char*>(codebook.data()), 256 * 4);
    out->append(reinterpret_cast<const char*>(idx.data()), n);
  }

  absl::Status Decode(absl::string_view b, size_t n, float* out) const override {
    if (absl::Status s = CheckSize(*this, b, n); !s.ok()) return s;
    std::array<float, 256> codebook;
    std::memcpy(codebook.data(), b.data(), 256 * 4);
    if (!AllFinite(codebook.data(), 256)) return NonFinite(*this);
    const uint8_t* idx = reinterpret_cast<const uint8_t*>(b.data() + 256 * 4);
    for (size_t i = 0; i < n; ++i) out[i] = codebook[idx[i]];
    return absl::OkStatus();
  }
};

// Nearest dynamic-code index of x in [-1, 1], without a binary search: the
// float's top 16 bits (sign, exponent, 7 mantissa bits) select the first
// candidate, and at most a few decision thresholds (midpoints between
// adjacent code values) follow inside one such bucket.
class NearestCode {
 public:
  NearestCode() {
    const auto& code = DynamicCode();
    for (int i = 0; i < 255; ++i) threshold_[i] = (code[i] + code[i + 1]) / 2;
    threshold_[255] = INFINITY;
    // For each bucket, the code index of the bucket's smallest value. Buckets
    // of negative floats are ordered the other way, so take the minimum of
    // the bucket's two ends.
    for (uint32_t key = 0; key < 65536; ++key) {
      uint32_t lo_bits = key << 16, hi_bits = (key << 16) | 0xffff;
      float a, b;
      std::memcpy(&a, &lo_bits, 4);
      std::memcpy(&b, &hi_bits, 4);
      float lo = std::min(a, b);
      if (!std::isfinite(lo)) lo = -1.0f;
      lo = std::clamp(lo, -1.0f, 1.0f);
      first_[key] = static_cast<uint8_t>(Slow(lo));
    }
  }
  uint8_t operator()(float x) const {
    uint32_t bits;
    std::memcpy(&bits, &x, 4);
    uint32_t j = first_[bits >> 16];
    while (x >= threshold_[j]) ++j;
    return static_cast<uint8_t>(j);
  }

 private:
  // Reference: the index i with threshold[i-1] <= x < threshold[i].
  int Slow(float x) const {
    int j = 0;
    while (j < 255 && x >= threshold_[j]) ++j;
    return j;
  }
  float threshold_[256];
  uint8_t first_[65536];
};

const NearestCode& Nearest() {
  static const NearestCode* table = new NearestCode();
  return *table;
}

// Blocks of kBlockwiseBlockSize values in n (the last may be shorter).
size_t Blocks(size_t n) { return (n + kBlockwiseBlockSize - 1) / kBlockwiseBlockSize; }

class Blockwise8BitCodec : public Codec {
 public:
  CodecId id() const override { return CodecId::kBlockwise8Bit; }
  const char* name() const override { return "blockwise8bit"; }
  size_t EncodedSize(size_t n) const override { return Blocks(n) * 4 + n; }

  void Encode(const float* v, size_t n, std::string* out) const override {
    const std::array<float, 256>& code = DynamicCode();
    size_t blocks = Blocks(n);
    size_t at = out->size();
    (void)code;
    out->resize(at + blocks * 4 + n);
    float* absmax_out = reinterpret_cast<float*>(out->data() + at);
    uint8_t* idx = reinterpret_cast<uint8_t*>(out->data() + at + blocks * 4);
    // Index of the code value 0 (an all-zero block encodes to it).
    static const uint8_t kZero = static_cast<uint8_t>(
        std::find(code.begin(), code.end(), 0.0f) - code.begin());
    for (size_t blk = 0; blk < blocks; ++blk) {
      size_t lo = blk * kBlockwiseBlockSize, hi = std::min(n, lo + kBlockwiseBlockSize);
      float absmax = 0;
      for (size_t i = lo; i < hi; ++i) absmax = std::max(absmax, std::fabs(v[i]));
      absmax_out[blk] = absmax;
      if (absmax == 0) {
        std::fill(idx + lo, idx + hi, kZero);
        continue;
      }
      float inv = 1.0f / absmax;
      const NearestCode& nearest = Nearest();
      for (size_t i = lo; i < hi; ++i) {
        idx[i] = nearest(std::clamp(v[i] * inv, -1.0f, 1.0f));
      }
    }
  }

  absl::Status Decode(absl::string_view b, size_t n, float* out) const override {
    if (absl::Status s = CheckSize(*this, b, n); !s.ok()) return s;
    const std::array<float, 256>& code = DynamicCode();
    size_t blocks = Blocks(n);
    std::vector<float> absmax(blocks);
    std::memcpy(absmax.data(), b.data(), blocks * 4);
    for (float a : absmax) {
      if (!std::isfinite(a) || a < 0) return NonFinite(*this);
    }
    const uint8_t* idx = reinterpret_cast<const uint8_t*>(b.data() + blocks * 4);
    for (size_t i = 0; i < n; ++i) out[i] = code[idx[i]] * absmax[i / kBlockwiseBlockSize];
    return absl::OkStatus();
  }
};

}  // namespace

// Per block of 4096 values, the kTopKPerBlock largest in magnitude (ties:
// the lower position), at their positions, 8-bit on the dynamic code scaled
// by the block's largest magnitude; every other value decodes to 0.
class TopK8BitCodec : public Codec {
 public:
  CodecId id() const override { return CodecId::kTopK8Bit; }
  const char* name() const override { return "topk8bit"; }
  // Values kept of the block of length `length`.
  static size_t Kept(size_t length) { return std::min(length, kTopKPerBlock); }
  static size_t KeptTotal(size_t n) {
    const size_t full = n / kBlockwiseBlockSize, tail = n % kBlockwiseBlockSize;
    return full * kTopKPerBlock + Kept(tail);
  }
  size_t EncodedSize(size_t n) const override { return Blocks(n) * 4 + KeptTotal(n) * 3; }

  void Encode(const float* v, size_t n, std::string* out) const override {
    const size_t blocks = Blocks(n), kept_total = KeptTotal(n);
    const size_t at = out->size();
    out->resize(at + blocks * 4 + kept_total * 3);
    char* scales = out->data() + at;
    char* positions = scales + blocks * 4;
    uint8_t* codes = reinterpret_cast<uint8_t*>(positions + kept_total * 2);
    const NearestCode& nearest = Nearest();
    std::vector<uint16_t> order(kBlockwiseBlockSize);
    size_t k_at = 0;
    for (size_t blk = 0; blk < blocks; ++blk) {
      const size_t lo = blk * kBlockwiseBlockSize, len = std::min(n - lo, kBlockwiseBlockSize);
      const size_t k = Kept(len);
      for (size_t i = 0; i < len; ++i) order[i] = static_cast<uint16_t>(i);
      auto larger = [&](uint16_t a, uint16_t b) {
        const float fa = std::fabs(v[lo + a]), fb = std::fabs(v[lo + b]);
        return fa > fb || (fa == fb && a < b);
      };
      std::nth_element(order.begin(), order.begin() + (k - 1), order.begin() + len, larger);
      std::sort(order.begin(), order.begin() + k);  // positions ascending
      float scale = 0;
      for (size_t j = 0; j < k; ++j) scale = std::max(scale, std::fabs(v[lo + order[j]]));
      std::memcpy(scales + blk * 4, &scale, 4);
      const float inv = scale > 0 ? 1.0f / scale : 0.0f;
      for (size_t j = 0; j < k; ++j, ++k_at) {
        std::memcpy(positions + k_at * 2, &order[j], 2);
        codes[k_at] = nearest(std::clamp(v[lo + order[j]] * inv, -1.0f, 1.0f));
      }
    }
  }

  absl::Status Decode(absl::string_view b, size_t n, float* out) const override {
    if (absl::Status s = CheckSize(*this, b, n); !s.ok()) return s;
    const std::array<float, 256>& code = DynamicCode();
    const size_t blocks = Blocks(n), kept_total = KeptTotal(n);
    const char* positions = b.data() + blocks * 4;
    const uint8_t* codes = reinterpret_cast<const uint8_t*>(positions + kept_total * 2);
    std::fill(out, out + n, 0.0f);
    size_t k_at = 0;
    for (size_t blk = 0; blk < blocks; ++blk) {
      const size_t lo = blk * kBlockwiseBlockSize, len = std::min(n - lo, kBlockwiseBlockSize);
      float scale;
      std::memcpy(&scale, b.data() + blk * 4, 4);
      if (!std::isfinite(scale) || scale < 0) return NonFinite(*this);
      int previous = -1;
      for (size_t j = 0; j < Kept(len); ++j, ++k_at) {
        uint16_t pos;
        std::memcpy(&pos, positions + k_at * 2, 2);
        if (pos >= len || static_cast<int>(pos) <= previous) {
          return absl::InvalidArgumentError(absl::StrCat(
              name(), ": positions of block ", blk, " are not increasing within its ", len,
              " values"));
        }
        previous = pos;
        out[lo + pos] = code[codes[k_at]] * scale;
      }
    }
    return absl::OkStatus();
  }
};

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t mag = x & 0x7fffffff;
  if (mag >= 0x7f800000) return static_cast<uint16_t>(sign | (mag > 0x7f800000 ? 0x7e00 : 0x7c00));
  if (mag >= 0x477ff000) return static_cast<uint16_t>(sign | 0x7c00);  // rounds to inf
  if (mag < 0x38800000) {
    // Subnormal half (or zero): shift the mantissa with round-to-nearest-even.
    if (mag < 0x33000000) return static_cast<uint16_t>(sign);
    uint32_t exp = mag >> 23;
    uint32_t mant = (mag & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - exp;  // 14 + (112 - exp) ... keeps 10 bits
    uint32_t half = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t h = ((mag >> 13) - (112 << 10));
  uint32_t rem = mag & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float HalfToFloat(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t x;
  if (exp == 0) {
    if (mant == 0) {
      x = sign;
    } else {
      // Normalize the subnormal.
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400) == 0);
      x = sign | ((112 - e) << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    x = sign | 0x7f800000 | (mant << 13);
  } else {
    x = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

uint16_t FloatToBf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((x >> 16) | 0x40);  // NaN
  uint32_t rounding = 0x7fff + ((x >> 16) & 1);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

float Bf16ToFloat(uint16_t b) {
  uint32_t x = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

bool AllFinite(const float* values, size_t n) {
  std::atomic<uint32_t> any_bad{0};
  // Parts of a round stay on the caller's thread; model-sized arrays are
  // checked on all cores.
  ParallelFor(n, [&](size_t begin, size_t end) {
    // Branch-free accumulation so the compiler can vectorize.
    uint32_t bad = 0;
    for (size_t i = begin; i < end; ++i) {
      uint32_t x;
      std::memcpy(&x, &values[i], 4);
      bad |= static_cast<uint32_t>((x & 0x7f800000) == 0x7f800000);
    }
    if (bad != 0) any_bad = 1;
  });
  return any_bad == 0;
}

const std::array<float, 256>& DynamicCode() {
  static const std::array<float, 256> code = [] {
    std::vector<double> data;
    // bitsandbytes create_dynamic_map(signed=True, max_exponent_bits=7,
    // total_bits=8): for each decade i, the 2^i midpoints of
    // linspace(0.1, 1, 2^i + 1), scaled by 10^(i-6), with both signs.
    for (int i = 0; i < 7; ++i) {
      int items = (1 << i) + 1;
      double scale = std::pow(10.0, i - 6);
      for (int k = 0; k + 1 < items; ++k) {
        double a = 0.1 + 0.9 * k / (items - 1);
        double b = 0.1 + 0.9 * (k + 1) / (items - 1);
        double mid = (a + b) / 2;
        data.push_back(scale * mid);
        data.push_back(-scale * mid);
      }
    }
    data.push_back(0.0);
    data.push_back(1.0);
    std::array<float, 256> out{};
    std::sort(data.begin(), data.end());
    for (size_t i = 0; i < 256; ++i) out[i] = static_cast<float>(data[i]);
    return out;
  }();
  return code;
}

const Codec& CodecFor(CodecId id) {
  static const NoneCodec none;
  static const Fp16Codec fp16;
  static const Bf16Codec bf16;
  static const Uniform8BitCodec uniform;
  static const Blockwise8BitCodec blockwise;
  static const TopK8BitCodec topk;
  switch (id) {
    case CodecId::kNone: return none;
    case CodecId::kFp16: return fp16;
    case CodecId::kBf16: return bf16;
    case CodecId::kUniform8Bit: return uniform;
    case CodecId::kBlockwise8Bit: return blockwise;
    case CodecId::kTopK8Bit: return topk;
  }
  return none;
}

absl::StatusOr<const Codec*> GetCodec(int id) {
  if (id < 0 || id >= kNumCodecs) {
    return absl::InvalidArgumentError(absl::StrCat("unknown codec ", id));
  }
  return &CodecFor(static_cast<CodecId>(id));
}

absl::StatusOr<CodecId> CodecIdNamed(absl::string_view name) {
  for (int id = 0; id < kNumCodecs; ++id) {
    if (name == CodecFor(static_cast<CodecId>(id)).name()) return static_cast<CodecId>(id);
  }
  std::string known;
  for (int id = 0; id < kNumCodecs; ++id) {
    absl::StrAppend(&known, id > 0 ? ", " : "", CodecFor(static_cast<CodecId>(id)).name());
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown codec \"", name, "\" (", known, ")"));
}

}  // namespace dd::averaging
