// Runs the credential fuzz entry point on mutated credentials.
#include <random>
#include <string>

#include "absl/time/time.h"
#include "common/crypto/peer_credential.h"
#include "gtest/gtest.h"
#include "tests/testing/mutations.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace dd {
namespace {

TEST(PeerCredentialFuzz, MutatedCredentialsNeverCrashNorPass) {
  auto issuer = *CredentialIssuer::Generate();
  std::string seed =
      *issuer->Issue(PeerClaims{"peer-7-abcdef", 3, "run-x", absl::FromUnixSeconds(2'000'000'000)});
  std::mt19937_64 rng(11);
  for (int i = 0; i < 20000; ++i) {
    std::string m = testing::Mutate(seed, rng, "ABCDEFabcdef0123456789-_.=");
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(m.data()), m.size());
  }
}

}  // namespace
}  // namespace dd
