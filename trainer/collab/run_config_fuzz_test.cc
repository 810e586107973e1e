// Runs the run-config fuzz entry point on mutated configurations.
#include <random>
#include <string>

#include "gtest/gtest.h"
#include "tests/testing/mutations.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace dd::collab {
namespace {

TEST(RunConfigFuzz, MutatedConfigsNeverCrashOrPassOutOfRange) {
  const std::string seeds[] = {
      R"({"run_id": "r", "sync": "outer", "local_steps": 8, "max_local_steps": 16,
          "outer_lr": 0.7, "outer_momentum": 0.9, "codec": "topk8bit", "error_feedback": true})",
      R"({"open_run": true, "aggregation": "centered_clip", "clip_tau": 0.5,
          "max_update_norm": 10, "sync": "gradients", "codec": "fp16"})",
  };
  std::mt19937_64 rng(3);
  for (int i = 0; i < 30000; ++i) {
    std::string m = testing::Mutate(seeds[i % 2], rng);
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(m.data()), m.size());
  }
}

}  // namespace
}  // namespace dd::collab
