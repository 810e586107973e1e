// Runs the libFuzzer entry point of dataset_service_fuzz.cc on generated
// inputs: info, listings and reads of every chunk from any offset, partial
// and cancelled, with and without the token, then random mutations of them.
#include <cstdint>
#include <random>
#include <string>

#include "common/testing/fuzz_scripts.h"
#include "gtest/gtest.h"
#include "protos/dataset.pb.h"

namespace dd::dataset {
namespace {

using ::dd::testing::FuzzRecord;
namespace v1 = ::distdiff::dataset::v1;

std::string Script(std::mt19937_64& rng) {
  std::string in;
  if (rng() % 3 == 0) {
    // More stalled readers of one chunk than a client may hold.
    v1::ReadChunkRequest r;
    r.set_chunk_id(rng() % 4);
    for (int k = 0; k < 6; ++k) in += FuzzRecord(2, 0x80, r);
  }
  for (int k = 0; k < 12; ++k) {
    // The token on most calls; a wrong one or none on some.
    const uint8_t auth = rng() % 4 == 0 ? static_cast<uint8_t>(1 + rng() % 2) : 0;
    switch (rng() % 4) {
      case 0:
        in += FuzzRecord(0, auth, v1::GetInfoRequest());
        break;
      case 1: {
        v1::ListChunksRequest r;
        r.set_page_size(rng() % 3 == 0 ? 20000 : static_cast<uint32_t>(rng() % 4));
        if (rng() % 3 == 0) r.set_page_token(std::to_string(rng() % 5));
        in += FuzzRecord(1, auth, r);
        break;
      }
      default: {
        v1::ReadChunkRequest r;
        r.set_chunk_id(rng() % 4);
        r.set_offset(rng() % 3 == 0 ? rng() % 100000 : rng() % 4096);
        // Read some frames, then drain or cancel (the op's high bits).
        const uint8_t frames = static_cast<uint8_t>(rng() % 4);
        // Some are stalled readers, held open to the end of the input.
        const uint8_t held = rng() % 3 == 0 ? 0x80 : 0;
        in += FuzzRecord(static_cast<uint8_t>(2 | (frames << 2) | (rng() % 2 ? 0x80 : 0)), auth | held, r);
        break;
      }
    }
  }
  return in;
}

TEST(DatasetServiceFuzz, GeneratedAndMutatedCallsEndWithDocumentedCodesAndFreeTheirSlots) {
  EXPECT_EQ(::dd::testing::RunFuzzScripts(60, 6, Script), 60);
}

}  // namespace
}  // namespace dd::dataset
