// libFuzzer target for the safetensors header and offset validation
// (tools/fuzz/run_fuzzers.sh); safetensors_test runs it on mutated inputs.
#include <cstddef>
#include <cstdint>

#include "trainer/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = dd::model::SafetensorsFile::FromBuffer(
      absl::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  if (file.ok()) {
    // Every accepted view lies inside the buffer.
    for (const auto& t : (*file)->tensors()) {
      if (t.data < data || t.data + t.nbytes > data + size) __builtin_trap();
    }
  }
  return 0;
}
