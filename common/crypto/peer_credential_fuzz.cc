// libFuzzer target for peer credentials as they arrive in an `authorization`
// header: parsing never crashes, and nothing but a credential signed with
// the run's key is ever accepted (tools/fuzz/run_fuzzers.sh;
// peer_credential_fuzz_test runs it on mutated credentials).
#include <cstddef>
#include <cstdint>

#include "absl/time/time.h"
#include "common/crypto/peer_credential.h"

namespace {

// A fixed key, so the fuzzer can learn the shape of valid credentials; the
// invariant is that a mutation never yields another credential that passes.
const dd::CredentialIssuer& Issuer() {
  static const dd::CredentialIssuer* issuer = dd::CredentialIssuer::Generate()->release();
  return *issuer;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto verifier = *dd::CredentialVerifier::FromPublicKey(Issuer().public_key());
  static const std::string genuine = *Issuer().Issue(
      dd::PeerClaims{"peer-1", 1, "run", absl::FromUnixSeconds(4'000'000'000)});
  absl::string_view token(reinterpret_cast<const char*>(data), size);
  (void)dd::ParseCheckedCredential(token);
  auto claims = verifier->Verify(token, absl::FromUnixSeconds(1'800'000'000));
  // Ed25519 signatures are deterministic and not malleable here: the only
  // accepted input is the genuine credential itself.
  if (claims.ok() && token != genuine) __builtin_trap();
  return 0;
}
