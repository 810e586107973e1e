// Benchmark: encode and decode GB/s (of float32 input) per core for each
// codec, against memcpy of the same bytes in the same run.
//
//   bazel build //trainer/averaging:codec_bench && bazel-bin/trainer/averaging/codec_bench
#include <chrono>
#include <cstring>
#include <iostream>
#include <random>
#include <vector>

#include "absl/strings/str_format.h"
#include "trainer/averaging/codec.h"

namespace {

template <typename Fn>
double SecondsPerRun(Fn fn) {
  fn();
  int runs = 0;
  auto start = std::chrono::steady_clock::now();
  double elapsed = 0;
  while (elapsed < 1.0) {
    fn();
    ++runs;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return elapsed / runs;
}

}  // namespace

int main() {
  using namespace dd::averaging;  // NOLINT
  const size_t n = 16 << 20;  // 64 MB of float32
  std::vector<float> v(n);
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0, 1e-3f);
  for (auto& x : v) x = d(rng);
  std::vector<float> dst(n);
  double bytes = n * 4.0;
  double memcpy_s = SecondsPerRun([&] { std::memcpy(dst.data(), v.data(), bytes); });
  double memcpy_gbs = bytes / memcpy_s / 1e9;
  std::cout << absl::StrFormat("%-14s %12s %12s %10s %10s %8s\n", "codec", "encode GB/s",
                               "decode GB/s", "enc/memcpy", "dec/memcpy", "ratio");
  std::cout << absl::StrFormat("%-14s %12.2f %12.2f %10.2f %10.2f %8.2f\n", "memcpy", memcpy_gbs,
                               memcpy_gbs, 1.0, 1.0, 1.0);
  for (int id = 0; id < kNumCodecs; ++id) {
    const Codec& c = CodecFor(static_cast<CodecId>(id));
    std::string enc;
    enc.reserve(c.EncodedSize(n));
    double e = SecondsPerRun([&] {
      enc.clear();
      c.Encode(v.data(), n, &enc);
    });
    double dsec = SecondsPerRun([&] {
      if (!c.Decode(enc, n, dst.data()).ok()) std::abort();
    });
    double eg = bytes / e / 1e9, dg = bytes / dsec / 1e9;
    std::cout << absl::StrFormat("%-14s %12.2f %12.2f %10.3f %10.3f %8.2f\n", c.name(), eg, dg,
                                 eg / memcpy_gbs, dg / memcpy_gbs,
                                 static_cast<double>(c.EncodedSize(n)) / bytes);
  }
  return 0;
}
