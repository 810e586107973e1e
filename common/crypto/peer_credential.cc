#include "common/crypto/peer_credential.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/io/file_util.h"

namespace dd {
namespace {

constexpr size_t kEd25519KeyBytes = 32;
constexpr size_t kEd25519SignatureBytes = 64;
constexpr size_t kMaxFieldBytes = 128;

struct PkeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};

bool ValidField(absl::string_view f, bool may_be_empty) {
  if (f.size() > kMaxFieldBytes || (f.empty() && !may_be_empty)) return false;
  for (char c : f) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  }
  return true;
}

absl::StatusOr<std::string> RawPublicKey(EVP_PKEY* key) {
  std::string raw(kEd25519KeyBytes, '\0');
  size_t len = raw.size();
  if (EVP_PKEY_get_raw_public_key(key, reinterpret_cast<unsigned char*>(raw.data()), &len) != 1 ||
      len != kEd25519KeyBytes) {
    return absl::InternalError("cannot read the Ed25519 public key");
  }
  return raw;
}

// Writes `contents` to a new file readable by its owner only.
absl::Status WritePrivateFile(const std::string& path, absl::string_view contents) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoToStatus(errno, "create", tmp);
  const char* p = contents.data();
  size_t left = contents.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      return ErrnoToStatus(err, "write", tmp);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) return ErrnoToStatus(errno, "fsync", tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoToStatus(errno, "rename", path);
  return absl::OkStatus();
}

}  // namespace

struct CredentialIssuer::Key {
  PkeyPtr pkey;
};

struct CredentialVerifier::Key {
  PkeyPtr pkey;
};

CredentialIssuer::CredentialIssuer(std::unique_ptr<Key> key, std::string public_key)
    : key_(std::move(key)), public_key_(std::move(public_key)) {}
CredentialIssuer::~CredentialIssuer() = default;

absl::StatusOr<std::unique_ptr<CredentialIssuer>> CredentialIssuer::Generate() {
  EVP_PKEY* raw = nullptr;
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
      EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr), &EVP_PKEY_CTX_free);
  if (ctx == nullptr || EVP_PKEY_keygen_init(ctx.get()) != 1 ||
      EVP_PKEY_keygen(ctx.get(), &raw) != 1) {
    return absl::InternalError("Ed25519 key generation failed");
  }
  auto key = std::make_unique<Key>();
  key->pkey.reset(raw);
  auto pub = RawPublicKey(raw);
  if (!pub.ok()) return pub.status();
  return std::unique_ptr<CredentialIssuer>(new CredentialIssuer(std::move(key), *pub));
}

absl::StatusOr<std::unique_ptr<CredentialIssuer>> CredentialIssuer::LoadOrCreate(
    const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return ErrnoToStatus(errno, "stat", path);
    auto fresh = Generate();
    if (!fresh.ok()) return fresh.status();
    std::unique_ptr<BIO, BioDeleter> bio(BIO_new(BIO_s_mem()));
    if (PEM_write_bio_PrivateKey(bio.get(), (*fresh)->key_->pkey.get(), nullptr, nullptr, 0,
                                 nullptr, nullptr) != 1) {
      return absl::InternalError("cannot encode the credential key");
    }
    char* data = nullptr;
    long len = BIO_get_mem_data(bio.get(), &data);
    if (absl::Status s = WritePrivateFile(path, absl::string_view(data, len)); !s.ok()) return s;
    return fresh;
  }
  if ((st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "credential key ", path, " is readable by others; chmod 600 it"));
  }
  auto pem = ReadFileToString(path, 64 << 10);
  if (!pem.ok()) return pem.status();
  std::unique_ptr<BIO, BioDeleter> bio(BIO_new_mem_buf(pem->data(), static_cast<int>(pem->size())));
  PkeyPtr pkey(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (pkey == nullptr || EVP_PKEY_id(pkey.get()) != EVP_PKEY_ED25519) {
    return absl::InvalidArgumentError(
        absl::StrCat("credential key ", path, " is not a PEM Ed25519 private key"));
  }
  auto pub = RawPublicKey(pkey.get());
  if (!pub.ok()) return pub.status();
  auto key = std::make_unique<Key>();
  key->pkey = std::move(pkey);
  return std::unique_ptr<CredentialIssuer>(new CredentialIssuer(std::move(key), *pub));
}

absl::StatusOr<std::string> CredentialIssuer::Issue(const PeerClaims& claims) const {
  if (!ValidField(claims.peer_id, false) || !ValidField(claims.run_id, true)) {
    return absl::InvalidArgumentError("peer id or run id unfit for a credential");
  }
  std::string body = absl::StrCat(claims.peer_id, "\n", claims.incarnation, "\n", claims.run_id,
                                  "\n", absl::ToUnixMillis(claims.expires));
  std::string signed_part = absl::StrCat(kPeerCredentialPrefix, absl::WebSafeBase64Escape(body));
  std::unique_ptr<EVP_MD_CTX, MdCtxDeleter> ctx(EVP_MD_CTX_new());
  std::string signature(kEd25519SignatureBytes, '\0');
  size_t sig_len = signature.size();
  if (ctx == nullptr ||
      EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key_->pkey.get()) != 1 ||
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &sig_len,
                     reinterpret_cast<const unsigned char*>(signed_part.data()),
                     signed_part.size()) != 1) {
    return absl::InternalError("signing a credential failed");
  }
  signature.resize(sig_len);
  return absl::StrCat(signed_part, ".", absl::WebSafeBase64Escape(signature));
}

CredentialVerifier::CredentialVerifier(std::unique_ptr<Key> key, std::string public_key)
    : key_(std::move(key)), public_key_(std::move(public_key)) {}
CredentialVerifier::~CredentialVerifier() = default;

absl::StatusOr<std::shared_ptr<const CredentialVerifier>> CredentialVerifier::FromPublicKey(
    absl::string_view public_key) {
  if (public_key.size() != kEd25519KeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat("an Ed25519 public key has ", kEd25519KeyBytes,
                                                   " bytes, not ", public_key.size()));
  }
  PkeyPtr pkey(EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(public_key.data()),
      public_key.size()));
  if (pkey == nullptr) return absl::InvalidArgumentError("not an Ed25519 public key");
  auto key = std::make_unique<Key>();
  key->pkey = std::move(pkey);
  return std::shared_ptr<const CredentialVerifier>(
      new CredentialVerifier(std::move(key), std::string(public_key)));
}

absl::StatusOr<std::shared_ptr<const CredentialVerifier>> CredentialVerifier::FromPublicKeyFile(
    const std::string& path) {
  auto text = ReadFileToString(path, 1024);
  if (!text.ok()) return text.status();
  std::string hex(absl::StripAsciiWhitespace(*text));
  if (hex.size() != 2 * kEd25519KeyBytes ||
      hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " does not hold a public key (64 lowercase hex digits)"));
  }
  return FromPublicKey(absl::HexStringToBytes(hex));
}

absl::StatusOr<PeerClaims> CredentialVerifier::CheckSignature(absl::string_view token) const {
  auto bad = [](absl::string_view why) {
    return absl::UnauthenticatedError(absl::StrCat("peer credential ", why));
  };
  if (token.size() > kMaxPeerCredentialLength) return bad("is too long");
  if (!absl::StartsWith(token, kPeerCredentialPrefix)) return bad("has the wrong prefix");
  size_t dot = token.rfind('.');
  if (dot == absl::string_view::npos || dot < sizeof(kPeerCredentialPrefix) - 1) {
    return bad("is malformed");
  }
  absl::string_view signed_part = token.substr(0, dot);
  std::string signature;
  if (!absl::WebSafeBase64Unescape(token.substr(dot + 1), &signature) ||
      signature.size() != kEd25519SignatureBytes) {
    return bad("has a malformed signature");
  }
  std::unique_ptr<EVP_MD_CTX, MdCtxDeleter> ctx(EVP_MD_CTX_new());
  if (ctx == nullptr ||
      EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key_->pkey.get()) != 1 ||
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                       signature.size(), reinterpret_cast<const unsigned char*>(signed_part.data()),
                       signed_part.size()) != 1) {
    return bad("has an invalid signature (not issued by this run's coordinator)");
  }
  return ParseCheckedCredential(token);
}

absl::StatusOr<PeerClaims> CredentialVerifier::Verify(absl::string_view token, absl::Time now,
                                                      absl::Duration expired_grace) const {
  std::optional<PeerClaims> cached;
  {
    absl::MutexLock lock(&cache_mu_);
    auto it = verified_.find(token);
    if (it != verified_.end()) cached = it->second;
  }
  PeerClaims claims;
  if (cached.has_value()) {
    claims = std::move(*cached);
  } else {
    auto checked = CheckSignature(token);
    if (!checked.ok()) return checked.status();
    claims = *checked;
    absl::MutexLock lock(&cache_mu_);
    if (verified_.size() >= kVerifiedCacheSize) verified_.clear();
    verified_.emplace(std::string(token), claims);
  }
  if (claims.expires + expired_grace <= now) {
    return absl::UnauthenticatedError(absl::StrCat("peer credential expired at ",
                                                   absl::FormatTime(claims.expires),
                                                   "; the peer must join again"));
  }
  return claims;
}

absl::StatusOr<PeerClaims> ParseCheckedCredential(absl::string_view token) {
  auto bad = [] { return absl::UnauthenticatedError("peer credential has malformed claims"); };
  if (!absl::StartsWith(token, kPeerCredentialPrefix)) return bad();
  size_t dot = token.rfind('.');
  if (dot == absl::string_view::npos || dot < sizeof(kPeerCredentialPrefix) - 1) return bad();
  std::string body;
  if (!absl::WebSafeBase64Unescape(
          token.substr(sizeof(kPeerCredentialPrefix) - 1, dot - (sizeof(kPeerCredentialPrefix) - 1)),
          &body)) {
    return bad();
  }
  std::vector<std::string> fields = absl::StrSplit(body, '\n');
  PeerClaims claims;
  int64_t expires_ms = 0;
  if (fields.size() != 4 || !absl::SimpleAtoi(fields[1], &claims.incarnation) ||
      !absl::SimpleAtoi(fields[3], &expires_ms) || fields[0].empty()) {
    return bad();
  }
  claims.peer_id = fields[0];
  claims.run_id = fields[2];
  claims.expires = absl::FromUnixMillis(expires_ms);
  return claims;
}

absl::Status WritePublicKeyFile(const std::string& path, absl::string_view public_key) {
  return WriteFileAtomically(path, absl::StrCat(absl::BytesToHexString(public_key), "\n"));
}

}  // namespace dd
