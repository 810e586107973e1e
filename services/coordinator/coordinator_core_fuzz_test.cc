// Runs the libFuzzer entry point of coordinator_core_fuzz.cc on generated
// inputs: scripts of joins, leases, completions, progress reports, rounds,
// audits and admin calls from the run token, joined peers and strangers,
// then random mutations of them.
#include <cstdint>
#include <random>
#include <string>

#include "common/testing/fuzz_scripts.h"
#include "gtest/gtest.h"
#include "protos/coordinator.pb.h"

namespace dd::coordinator {
namespace {

using ::dd::testing::FuzzRecord;
namespace v1 = ::distdiff::coordinator::v1;

std::string Advance(uint16_t seconds) {
  return std::string{'\xff', '\0', static_cast<char>(seconds & 0xff), static_cast<char>(seconds >> 8)};
}

// A run as peers would drive it, with one liar among the callers: three
// joins, leases, completions (some over-claiming), reports, rounds and
// audits, admin calls with and without the token, and time passing.
std::string Script(std::mt19937_64& rng) {
  std::string in;
  for (int p = 0; p < 3; ++p) {
    v1::JoinRequest j;
    j.set_listen_address("127.0.0.1:" + std::to_string(5000 + p * 11));
    j.set_display_name("p" + std::to_string(p));
    in += FuzzRecord(0, 0, j);
  }
  // Each peer leases two chunks and reports their samples toward step 0 (a
  // round opens at 16), takes the round, and completes its first lease.
  for (int p = 0; p < 3; ++p) {
    v1::AcquireChunksRequest a;
    a.set_max_chunks(2);
    in += FuzzRecord(3, static_cast<uint8_t>(3 + p), a);
    v1::ReportProgressRequest r;
    r.set_samples_accumulated(8);
    r.set_samples_per_second(2);
    in += FuzzRecord(9, static_cast<uint8_t>(3 + p), r);
  }
  for (int p = 0; p < 3; ++p) {
    in += FuzzRecord(10, static_cast<uint8_t>(3 + p), v1::GetRoundRequest());
    v1::CompleteChunkRequest c;
    c.set_lease_id(static_cast<uint64_t>(2 * p));
    c.set_samples_trained(8);
    in += FuzzRecord(5, static_cast<uint8_t>(3 + p), c);
  }
  for (int k = 0; k < 40; ++k) {
    const uint8_t who = static_cast<uint8_t>(rng() % 8);
    v1::PeerRef named;
    if (rng() % 4 == 0) named.set_peer_id("peer-" + std::to_string(rng() % 4) + "-000000");
    switch (rng() % 9) {
      case 0: {
        v1::AcquireChunksRequest r;
        *r.mutable_peer() = named;
        r.set_max_chunks(rng() % 4);
        in += FuzzRecord(3, who, r);
        break;
      }
      case 1: {
        v1::CompleteChunkRequest r;
        *r.mutable_peer() = named;
        r.set_chunk_id(rng() % 2 ? 0 : rng() % 7);
        r.set_lease_id(rng() % 20);
        r.set_samples_trained(rng() % 2 ? 8 : static_cast<uint32_t>(rng()));
        in += FuzzRecord(5, who, r);
        break;
      }
      case 2: {
        v1::ReportProgressRequest r;
        *r.mutable_peer() = named;
        r.set_global_step(rng() % 3);
        r.set_samples_accumulated(rng() % 2 ? 8 : rng());
        r.set_samples_per_second(1.5);
        r.set_bandwidth_mbps(rng() % 2 ? 100 : 1e300);
        r.set_hash_step(rng() % 3);
        r.set_params_hash(std::string(64, "0a"[rng() % 2]));
        in += FuzzRecord(9, who, r);
        break;
      }
      case 3: {
        v1::GetRoundRequest r;
        *r.mutable_peer() = named;
        in += FuzzRecord(10, who, r);
        break;
      }
      case 4: {
        v1::ReportAuditsRequest r;
        *r.mutable_peer() = named;
        r.set_round_id(rng() % 3);
        in += FuzzRecord(13, who, r);
        break;
      }
      case 5: {
        v1::AdminEvictPeerRequest r;
        r.set_peer_id("peer-" + std::to_string(rng() % 4));
        in += FuzzRecord(15, who | (rng() % 2 ? 0x80 : 0), r);
        break;
      }
      case 6: {
        v1::HeartbeatRequest r;
        *r.mutable_peer() = named;
        in += FuzzRecord(1, who, r);
        break;
      }
      case 7:
        in += Advance(static_cast<uint16_t>(rng() % 90));
        break;
      default: {
        v1::ReleaseChunksRequest r;
        *r.mutable_peer() = named;
        r.add_lease_ids(rng() % 12);
        in += FuzzRecord(6, who, r);
        break;
      }
    }
  }
  return in;
}

TEST(CoordinatorCoreFuzz, GeneratedAndMutatedCallSequencesKeepTheRunStateSane) {
  EXPECT_EQ(::dd::testing::RunFuzzScripts(90, 8, Script), 90);
}

}  // namespace
}  // namespace dd::coordinator
