// Peer credentials: signed, expiring bearer tokens that bind a caller to one
// peer of a run.
//
// The coordinator holds an Ed25519 private key (CredentialIssuer) and hands
// every peer that joins a credential naming it. Anyone holding the public key
// (CredentialVerifier) can check a credential offline: the other peers'
// averaging and state services, the dataset service. A peer cannot mint a
// credential for another peer, which a shared HMAC secret would allow, so a
// signature scheme with a key only the coordinator has is used.
//
// Wire form: "ddp1." base64url(claims) "." base64url(signature), where claims
// is "<peer_id>\n<incarnation>\n<run_id>\n<expires_unix_ms>" and the
// signature covers the "ddp1." prefix and the encoded claims.
#ifndef COMMON_CRYPTO_PEER_CREDENTIAL_H_
#define COMMON_CRYPTO_PEER_CREDENTIAL_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace dd {

// Prefix of every credential; lets an authenticator tell it from a run token.
inline constexpr char kPeerCredentialPrefix[] = "ddp1.";
// Invitations are credentials whose peer id is this prefix and a name, with
// incarnation 0 (no peer id the coordinator issues starts so).
inline constexpr char kInvitationPrefix[] = "invitation:";

// Upper bound on a credential's length; longer bearer values are not parsed.
inline constexpr size_t kMaxPeerCredentialLength = 1024;

struct PeerClaims {
  std::string peer_id;       // 1-128 bytes, no control characters
  uint64_t incarnation = 0;  // the Join that issued it
  std::string run_id;        // 0-128 bytes, no control characters
  absl::Time expires;
};

class CredentialIssuer {
 public:
  // A fresh random key (tests, or a coordinator without a key file).
  static absl::StatusOr<std::unique_ptr<CredentialIssuer>> Generate();
  // Reads the PEM (PKCS#8) private key at `path`, or creates one there with
  // mode 0600 when the file does not exist, so credentials stay valid across
  // coordinator restarts. Errors: the file exists but is not an Ed25519 key
  // (InvalidArgument), cannot be read or written (the errno's code).
  static absl::StatusOr<std::unique_ptr<CredentialIssuer>> LoadOrCreate(const std::string& path);

  ~CredentialIssuer();
  CredentialIssuer(const CredentialIssuer&) = delete;
  CredentialIssuer& operator=(const CredentialIssuer&) = delete;

  // Signs `claims`. InvalidArgument when a field breaks the limits above.
  absl::StatusOr<std::string> Issue(const PeerClaims& claims) const;

  // The raw 32-byte public key, for CredentialVerifier::FromPublicKey.
  const std::string& public_key() const { return public_key_; }

 private:
  struct Key;
  explicit CredentialIssuer(std::unique_ptr<Key> key, std::string public_key);

  // Fixed after construction.
  const std::unique_ptr<Key> key_;
  const std::string public_key_;
};

class CredentialVerifier {
 public:
  // `public_key`: the 32 raw bytes of CredentialIssuer::public_key().
  // InvalidArgument for any other length.
  static absl::StatusOr<std::shared_ptr<const CredentialVerifier>> FromPublicKey(
      absl::string_view public_key);
  // Reads a key written by WritePublicKeyFile (64 hex digits).
  static absl::StatusOr<std::shared_ptr<const CredentialVerifier>> FromPublicKeyFile(
      const std::string& path);

  ~CredentialVerifier();

  // The claims of `token` when its signature is valid and it expires after
  // `now - expired_grace` (a positive grace accepts a recently expired
  // credential as proof of identity, e.g. to rejoin). Unauthenticated
  // otherwise, with a message that says why (malformed, bad signature,
  // expired). Thread-safe. Credentials whose signature checked out are
  // remembered (up to kVerifiedCacheSize), so the many calls a peer makes
  // with one credential cost a lookup, not a signature check each: OpenSSL
  // 3's per-call algorithm fetch serialised 64 concurrent clients.
  absl::StatusOr<PeerClaims> Verify(absl::string_view token, absl::Time now,
                                    absl::Duration expired_grace = absl::ZeroDuration()) const;

  const std::string& public_key() const { return public_key_; }

  static constexpr size_t kVerifiedCacheSize = 4096;

 private:
  struct Key;
  CredentialVerifier(std::unique_ptr<Key> key, std::string public_key);
  // The signature check alone (no cache, no expiry).
  absl::StatusOr<PeerClaims> CheckSignature(absl::string_view token) const;

  // Fixed after construction.
  const std::unique_ptr<Key> key_;
  const std::string public_key_;

  // Tokens whose signature checked out, with their claims; emptied when
  // full (a peer's next call simply checks its signature again).
  mutable absl::Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, PeerClaims> verified_ ABSL_GUARDED_BY(cache_mu_);
};

// The claims of a credential without checking its signature or expiry: only
// for a credential already verified on the same call (servers verify every
// call's credential in TokenAuthProcessor before a handler runs; handlers
// then read who called from it). Unauthenticated when it is malformed.
absl::StatusOr<PeerClaims> ParseCheckedCredential(absl::string_view token);

// Writes a public key as 64 hex digits (atomically), for services that
// verify credentials without talking to the coordinator.
absl::Status WritePublicKeyFile(const std::string& path, absl::string_view public_key);

}  // namespace dd

#endif  // COMMON_CRYPTO_PEER_CREDENTIAL_H_
