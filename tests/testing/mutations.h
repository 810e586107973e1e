// Input mutations for the Bazel tests that run libFuzzer entry points on a
// bounded number of generated inputs (the tools/fuzz campaigns run the same
// entry points under libFuzzer itself).
#ifndef TESTS_TESTING_MUTATIONS_H_
#define TESTS_TESTING_MUTATIONS_H_

#include <cstdint>
#include <random>
#include <string>

namespace dd::testing {

// `seed` with 1-4 random edits: a byte overwritten, the tail cut, or one of
// `alphabet`'s characters inserted (structure characters find more bugs in
// text formats than random bytes do).
inline std::string Mutate(const std::string& seed, std::mt19937_64& rng,
                          const std::string& alphabet = "0123456789{}[],:\"-.\n\\") {
  std::string m = seed;
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits && !m.empty(); ++e) {
    switch (rng() % 3) {
      case 0: m[rng() % m.size()] = static_cast<char>(rng()); break;
      case 1: m.resize(rng() % (m.size() + 1)); break;
      default: m.insert(rng() % (m.size() + 1), 1, alphabet[rng() % alphabet.size()]); break;
    }
  }
  return m;
}

}  // namespace dd::testing

#endif  // TESTS_TESTING_MUTATIONS_H_
