// Runs the libFuzzer entry point of reducer_registry_fuzz.cc on generated
// inputs: well-formed parts, audit copies and reveals from every member and
// in others' names, then random mutations of them.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "trainer/averaging/codec.h"
#include "trainer/averaging/reducer_registry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace dd::averaging {
namespace {

std::string Record(uint8_t caller, const v1::ReducePartRequest& request) {
  std::string bytes = request.SerializeAsString();
  std::string out(3, '\0');
  out[0] = static_cast<char>(caller);
  out[1] = static_cast<char>(bytes.size() & 0xff);
  out[2] = static_cast<char>(bytes.size() >> 8);
  return out + bytes;
}

TEST(ReducerRegistryFuzz, GeneratedAndMutatedRequestsAreEachAnsweredOnce) {
  std::mt19937_64 rng(2026);
  int inputs = 0;
  for (int codec = 0; codec < kNumCodecs; ++codec) {
    for (int round = 0; round < 30; ++round) {
      std::string input(1, static_cast<char>(codec | (round % 2 ? 0x80 : 0)));
      for (int k = 0; k < 8; ++k) {
        v1::ReducePartRequest r;
        r.set_kind(static_cast<v1::PartKind>(rng() % 3));
        r.set_round_id(7);
        const uint32_t sender = rng() % 3;
        r.set_sender_index(sender);
        r.set_sender_peer_id("p" + std::to_string(sender));
        r.set_span(r.kind() == v1::AUDIT_COPY ? 1 : 0);
        r.set_offset(256 * (rng() % 3));
        const uint32_t count = r.offset() == 512 ? 188 : 256;
        r.set_count(count);
        r.set_codec(static_cast<v1::Codec>(codec));
        r.set_weight(rng() % 6);
        std::vector<float> values(count);
        for (auto& x : values) x = std::normal_distribution<float>()(rng);
        if (r.kind() != v1::REVEAL) {
          CodecFor(static_cast<CodecId>(codec)).Encode(values.data(), count, r.mutable_data());
        }
        input += Record(rng() % 16, r);
      }
      std::string mutated = input;
      if (round % 3 == 1) {
        for (int m = 0; m < 6; ++m) mutated[1 + rng() % (mutated.size() - 1)] ^= rng();
      } else if (round % 3 == 2) {
        mutated.resize(1 + rng() % mutated.size());
      }
      LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(mutated.data()), mutated.size());
      ++inputs;
    }
  }
  EXPECT_EQ(inputs, kNumCodecs * 30);
}

}  // namespace
}  // namespace dd::averaging
