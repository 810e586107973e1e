// libFuzzer target for the codec decoders: input = codec id byte, 3 bytes of
// element count, then the encoded bytes. tools/fuzz/run_fuzzers.sh builds one
// binary per decoder with clang (-fsanitize=fuzzer,address) by defining
// DD_FUZZ_CODEC (the id byte is then ignored); codec_fuzz_test runs the same
// function on generated inputs under Bazel.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "trainer/averaging/codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
#ifdef DD_FUZZ_CODEC
  int id = DD_FUZZ_CODEC;
#else
  int id = data[0] % dd::averaging::kNumCodecs;
#endif
  // Up to 65535 values (byte 3 is reserved): enough for every size rule,
  // small enough that each run is fast under ASan.
  size_t n = size_t{data[1]} | (size_t{data[2]} << 8);
  auto codec = dd::averaging::GetCodec(id);
  if (!codec.ok()) return 0;
  std::vector<float> out(n);
  absl::string_view bytes(reinterpret_cast<const char*>(data + 4), size - 4);
  if ((*codec)->Decode(bytes, n, out.data()).ok()) {
    // A decoded buffer is all finite by contract.
    if (!dd::averaging::AllFinite(out.data(), n)) __builtin_trap();
  }
  return 0;
}
