// Runs the libFuzzer entry point of codec_fuzz.cc on a bounded number of
// generated inputs (valid encodings, then random mutations and truncations)
// so every test run exercises the decoders' bounds checks.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "trainer/averaging/codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace dd::averaging {
namespace {

TEST(CodecFuzz, MutatedEncodingsNeverCrash) {
  std::mt19937_64 rng(12345);
  int runs = 0;
  for (int id = 0; id < kNumCodecs; ++id) {
    for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{4096}, size_t{5000}}) {
      std::vector<float> v(n);
      for (auto& x : v) x = std::normal_distribution<float>()(rng);
      std::string enc;
      CodecFor(static_cast<CodecId>(id)).Encode(v.data(), n, &enc);
      std::string input(4, '\0');
      input[0] = static_cast<char>(id);
      input[1] = static_cast<char>(n & 0xff);
      input[2] = static_cast<char>((n >> 8) & 0xff);
      input[3] = static_cast<char>((n >> 16) & 0x3f);
      input += enc;
      for (int m = 0; m < 200; ++m) {
        std::string mutated = input;
        switch (m % 4) {
          case 0:  // flip bytes
            for (int k = 0; k < 4 && !mutated.empty(); ++k) mutated[rng() % mutated.size()] ^= rng();
            break;
          case 1:  // truncate
            mutated.resize(rng() % (mutated.size() + 1));
            break;
          case 2:  // extend
            mutated += std::string(rng() % 64, static_cast<char>(rng()));
            break;
          case 3:  // change the count
            mutated[1] = static_cast<char>(rng());
            mutated[3] = static_cast<char>(rng());
            break;
        }
        LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(mutated.data()), mutated.size());
        ++runs;
      }
    }
  }
  EXPECT_EQ(runs, kNumCodecs * 5 * 200);
}

}  // namespace
}  // namespace dd::averaging
