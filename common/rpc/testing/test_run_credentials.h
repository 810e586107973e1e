// Test helper: one run's credentials, as the coordinator would hand them
// out, for tests that start peers' servers without a coordinator.
#ifndef COMMON_RPC_TESTING_TEST_RUN_CREDENTIALS_H_
#define COMMON_RPC_TESTING_TEST_RUN_CREDENTIALS_H_

#include <memory>
#include <string>

#include "common/crypto/peer_credential.h"
#include "common/rpc/auth.h"
#include "common/rpc/security.h"

namespace dd::testing {

class TestRunCredentials {
 public:
  // With a fresh key, or with the key in `key_file` (created when missing),
  // which processes a test starts can be given as well.
  explicit TestRunCredentials(std::string run_token, const std::string& key_file = "");

  // A server's config: the run token, and peer credentials of this run.
  SecurityConfig Server() const;
  // A client's config that calls as peer `peer_id` (its credential).
  SecurityConfig Peer(const std::string& peer_id, uint64_t incarnation = 1) const;
  // A client's config with the run token only.
  SecurityConfig RunTokenOnly() const;
  // A credential of this run for `peer_id`.
  std::string CredentialFor(const std::string& peer_id, uint64_t incarnation = 1) const;
  const std::string& public_key() const { return issuer_->public_key(); }

 private:
  const std::string run_token_;
  std::unique_ptr<CredentialIssuer> issuer_;
  std::shared_ptr<PeerVerifierSlot> verifier_;
};

}  // namespace dd::testing

#endif  // COMMON_RPC_TESTING_TEST_RUN_CREDENTIALS_H_
