// Helpers for the Bazel tests that run a libFuzzer entry point on generated
// input: the record format the services' fuzz targets read, and the loop
// that runs scripted inputs, mutated or cut short, through the entry point
// (and writes them out as a seed corpus when DD_FUZZ_SEED_DIR is set, which
// tools/fuzz/run_fuzzers.sh does with `bazel run`).
#ifndef COMMON_TESTING_FUZZ_SCRIPTS_H_
#define COMMON_TESTING_FUZZ_SCRIPTS_H_

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <random>
#include <string>

#include <google/protobuf/message.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace dd::testing {

// One call of a service fuzz target's input: [op][who][2-byte length, little
// endian][the serialized request].
inline std::string FuzzRecord(uint8_t op, uint8_t who, const google::protobuf::Message& request) {
  std::string bytes = request.SerializeAsString();
  std::string out(4, '\0');
  out[0] = static_cast<char>(op);
  out[1] = static_cast<char>(who);
  out[2] = static_cast<char>(bytes.size() & 0xff);
  out[3] = static_cast<char>((bytes.size() >> 8) & 0xff);
  return out + bytes;
}

// Runs `count` inputs made by `script` through LLVMFuzzerTestOneInput: a
// third as made, a third with `flips` random bytes changed, a third cut at
// a random length. Returns how many ran.
inline int RunFuzzScripts(int count, int flips,
                          const std::function<std::string(std::mt19937_64&)>& script) {
  std::mt19937_64 rng(2026);
  const char* seeds = std::getenv("DD_FUZZ_SEED_DIR");
  int ran = 0;
  for (int i = 0; i < count; ++i) {
    std::string input = script(rng);
    if (!input.empty() && i % 3 == 1) {
      for (int m = 0; m < flips; ++m) input[rng() % input.size()] ^= static_cast<char>(rng());
    } else if (!input.empty() && i % 3 == 2) {
      input.resize(rng() % input.size());
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
    ++ran;
    if (seeds != nullptr) {
      std::ofstream(std::string(seeds) + "/seed-" + std::to_string(i), std::ios::binary) << input;
    }
  }
  return ran;
}

}  // namespace dd::testing

#endif  // COMMON_TESTING_FUZZ_SCRIPTS_H_
