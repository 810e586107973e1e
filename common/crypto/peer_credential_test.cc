#include "common/crypto/peer_credential.h"

#include <sys/stat.h>

#include <cstdlib>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"

namespace dd {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);

PeerClaims Claims(const std::string& id = "peer-1-abcdef") {
  return PeerClaims{id, 3, "run-x", kNow + absl::Minutes(10)};
}

TEST(PeerCredential, IssuedCredentialVerifiesWithItsClaims) {
  auto issuer = CredentialIssuer::Generate();
  ASSERT_TRUE(issuer.ok()) << issuer.status();
  auto verifier = CredentialVerifier::FromPublicKey((*issuer)->public_key());
  ASSERT_TRUE(verifier.ok()) << verifier.status();
  auto token = (*issuer)->Issue(Claims());
  ASSERT_TRUE(token.ok()) << token.status();
  auto claims = (*verifier)->Verify(*token, kNow);
  ASSERT_TRUE(claims.ok()) << claims.status();
  EXPECT_EQ(claims->peer_id, "peer-1-abcdef");
  EXPECT_EQ(claims->incarnation, 3u);
  EXPECT_EQ(claims->run_id, "run-x");
  EXPECT_EQ(claims->expires, kNow + absl::Minutes(10));
}

TEST(PeerCredential, ExpiredIsRefusedUnlessWithinGrace) {
  auto issuer = *CredentialIssuer::Generate();
  auto verifier = *CredentialVerifier::FromPublicKey(issuer->public_key());
  std::string token = *issuer->Issue(Claims());
  absl::Time later = kNow + absl::Minutes(11);
  EXPECT_EQ(verifier->Verify(token, later).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(verifier->Verify(token, later, absl::Minutes(5)).ok());
}

TEST(PeerCredential, RememberedCredentialsStillExpireAndOthersAreStillChecked) {
  auto issuer = *CredentialIssuer::Generate();
  auto verifier = *CredentialVerifier::FromPublicKey(issuer->public_key());
  std::string token = *issuer->Issue(Claims());
  ASSERT_TRUE(verifier->Verify(token, kNow).ok());
  ASSERT_TRUE(verifier->Verify(token, kNow).ok());  // from the cache
  EXPECT_EQ(verifier->Verify(token, kNow + absl::Minutes(11)).status().code(),
            absl::StatusCode::kUnauthenticated);
  std::string edited = token;
  edited[edited.size() - 2] = edited[edited.size() - 2] == 'A' ? 'B' : 'A';
  EXPECT_EQ(verifier->Verify(edited, kNow).status().code(), absl::StatusCode::kUnauthenticated);
  // Past the cache's size it starts over; everything still verifies.
  for (size_t i = 0; i < CredentialVerifier::kVerifiedCacheSize + 10; ++i) {
    ASSERT_TRUE(verifier->Verify(*issuer->Issue(Claims("peer-" + std::to_string(i))), kNow).ok());
  }
  EXPECT_TRUE(verifier->Verify(token, kNow).ok());
}

TEST(PeerCredential, AnotherKeysCredentialIsRefused) {
  auto issuer = *CredentialIssuer::Generate();
  auto other = *CredentialIssuer::Generate();
  auto verifier = *CredentialVerifier::FromPublicKey(issuer->public_key());
  auto status = verifier->Verify(*other->Issue(Claims()), kNow).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(status.message().find("invalid signature"), std::string::npos) << status;
}

TEST(PeerCredential, EditedClaimsBreakTheSignature) {
  auto issuer = *CredentialIssuer::Generate();
  auto verifier = *CredentialVerifier::FromPublicKey(issuer->public_key());
  std::string token = *issuer->Issue(Claims("peer-victim"));
  // Re-encode the claims with another peer id but keep the signature.
  size_t dot = token.rfind('.');
  std::string forged = std::string(kPeerCredentialPrefix) +
                       absl::WebSafeBase64Escape("peer-attacker\n3\nrun-x\n1800000600000") +
                       token.substr(dot);
  EXPECT_EQ(verifier->Verify(forged, kNow).status().code(), absl::StatusCode::kUnauthenticated);
  for (std::string junk : {std::string(""), std::string("ddp1."), std::string("ddp1.a.b"),
                           std::string("Bearer x"), std::string(4096, 'a'),
                           token.substr(0, token.size() - 3)}) {
    EXPECT_EQ(verifier->Verify(junk, kNow).status().code(), absl::StatusCode::kUnauthenticated)
        << junk.substr(0, 40);
  }
}

TEST(PeerCredential, ClaimsWithSeparatorsCannotBeIssued) {
  auto issuer = *CredentialIssuer::Generate();
  EXPECT_EQ(issuer->Issue(Claims("a\nb")).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(issuer->Issue(Claims("")).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PeerCredential, KeyFileIsCreatedPrivateAndReloadedTheSame) {
  std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/credential.pem";
  auto first = CredentialIssuer::LoadOrCreate(path);
  ASSERT_TRUE(first.ok()) << first.status();
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto second = CredentialIssuer::LoadOrCreate(path);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*first)->public_key(), (*second)->public_key());
  // A credential from before the restart still verifies.
  auto verifier = *CredentialVerifier::FromPublicKey((*second)->public_key());
  EXPECT_TRUE(verifier->Verify(*(*first)->Issue(Claims()), kNow).ok());

  std::string pub = std::string(std::getenv("TEST_TMPDIR")) + "/credential.pub";
  ASSERT_TRUE(WritePublicKeyFile(pub, (*first)->public_key()).ok());
  auto from_file = CredentialVerifier::FromPublicKeyFile(pub);
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  EXPECT_EQ((*from_file)->public_key(), (*first)->public_key());

  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  EXPECT_EQ(CredentialIssuer::LoadOrCreate(path).status().code(),
            absl::StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace dd
