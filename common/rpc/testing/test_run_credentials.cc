#include "common/rpc/testing/test_run_credentials.h"

#include <glog/logging.h>

#include "absl/time/clock.h"

namespace dd::testing {

TestRunCredentials::TestRunCredentials(std::string run_token, const std::string& key_file)
    : run_token_(std::move(run_token)),
      issuer_(key_file.empty() ? *CredentialIssuer::Generate()
                               : *CredentialIssuer::LoadOrCreate(key_file)),
      verifier_(std::make_shared<PeerVerifierSlot>()) {
  verifier_->Set(*CredentialVerifier::FromPublicKey(issuer_->public_key()));
}

SecurityConfig TestRunCredentials::Server() const {
  SecurityConfig s;
  s.auth_token = run_token_;
  s.peer_verifier = verifier_;
  return s;
}

SecurityConfig TestRunCredentials::Peer(const std::string& peer_id, uint64_t incarnation) const {
  SecurityConfig s = RunTokenOnly();
  s.call_token = std::make_shared<CallToken>(run_token_);
  s.call_token->SetPeerCredential(CredentialFor(peer_id, incarnation));
  return s;
}

SecurityConfig TestRunCredentials::RunTokenOnly() const {
  SecurityConfig s;
  s.auth_token = run_token_;
  return s;
}

std::string TestRunCredentials::CredentialFor(const std::string& peer_id,
                                              uint64_t incarnation) const {
  auto token = issuer_->Issue(
      PeerClaims{peer_id, incarnation, "test-run", absl::Now() + absl::Hours(1)});
  CHECK(token.ok()) << token.status();
  return *token;
}

}  // namespace dd::testing
