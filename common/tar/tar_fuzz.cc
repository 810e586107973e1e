// libFuzzer target for the tar reader (ustar, GNU long names, pax headers):
// whatever the bytes, listing never reads outside the archive and every
// entry it reports lies inside it (tools/fuzz/run_fuzzers.sh;
// tar_fuzz_test runs it on mutated archives).
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/tar/tar_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto read_at = [&](uint64_t offset, size_t length, char* out) -> absl::StatusOr<size_t> {
    if (offset > size) __builtin_trap();  // the reader asked past the end
    size_t n = std::min<uint64_t>(length, size - offset);
    std::memcpy(out, data + offset, n);
    return n;
  };
  auto listed = dd::tar::ListEntries(read_at, size);
  if (listed.ok()) {
    for (const auto& e : listed->entries) {
      if (e.data_offset > size || e.size > size - e.data_offset) __builtin_trap();
    }
  }
  return 0;
}
