// libFuzzer target for the run configuration JSON every peer reads from the
// coordinator: parsing never crashes, and what it accepts is within the
// documented ranges (tools/fuzz/run_fuzzers.sh; run_config_fuzz_test runs
// it on mutated configs).
#include <cstddef>
#include <cstdint>
#include <string>

#include "trainer/collab/sync_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto config = dd::collab::ParseSyncConfig(text);
  if (config.ok()) {
    const auto& o = config->outer;
    if (o.local_steps < 1 || !(o.lr > 0) || !(o.momentum >= 0 && o.momentum < 1) ||
        !(config->clip_tau > 0) || !(config->max_update_norm >= 0) ||
        dd::collab::MaxLocalSteps(o) < o.local_steps) {
      __builtin_trap();
    }
  }
  return 0;
}
