#include "common/crypto/sha256.h"

#include <openssl/evp.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace dd {

struct Sha256::State {
  EVP_MD_CTX* ctx = nullptr;
};

namespace {
void InitContext(EVP_MD_CTX* ctx) {
  // EVP_DigestInit_ex can only fail on allocation failure or an unknown
  // digest; neither is recoverable here.
  if (EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) std::abort();
}
}  // namespace

Sha256::Sha256() : state_(std::make_unique<State>()) {
  state_->ctx = EVP_MD_CTX_new();
  if (state_->ctx == nullptr) std::abort();
  InitContext(state_->ctx);
}

Sha256::~Sha256() {
  if (state_ != nullptr && state_->ctx != nullptr) EVP_MD_CTX_free(state_->ctx);
}

Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&& other) noexcept {
  if (this != &other) {
    if (state_ != nullptr && state_->ctx != nullptr) {
      EVP_MD_CTX_free(state_->ctx);
    }
    state_ = std::move(other.state_);
  }
  return *this;
}

void Sha256::Update(absl::string_view data) { Update(data.data(), data.size()); }

void Sha256::Update(const void* data, size_t size) {
  if (size == 0) return;
  EVP_DigestUpdate(state_->ctx, data, size);
}

Sha256Digest Sha256::Finish() {
  Sha256Digest digest;
  unsigned int len = 0;
  EVP_DigestFinal_ex(state_->ctx, digest.data(), &len);
  InitContext(state_->ctx);
  return digest;
}

Sha256Digest Sha256Of(absl::string_view data) {
  Sha256 h;
  h.Update(data);
  return h.Finish();
}

std::string DigestToHex(const Sha256Digest& digest) {
  return absl::BytesToHexString(absl::string_view(
      reinterpret_cast<const char*>(digest.data()), digest.size()));
}

absl::StatusOr<Sha256Digest> DigestFromHex(absl::string_view hex) {
  if (hex.size() != 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("a SHA-256 hex digest has 64 characters, got ", hex.size()));
  }
  for (char c : hex) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError("SHA-256 digest is not hexadecimal");
    }
  }
  std::string bytes = absl::HexStringToBytes(hex);
  Sha256Digest digest;
  std::memcpy(digest.data(), bytes.data(), digest.size());
  return digest;
}

absl::StatusOr<Sha256Digest> Sha256OfFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    int err = errno;
    std::string msg = absl::StrCat("cannot open ", path, ": ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(msg);
    if (err == EACCES) return absl::PermissionDeniedError(msg);
    return absl::InternalError(msg);
  }
  Sha256 h;
  std::vector<char> buf(1 << 20);
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) h.Update(buf.data(), n);
  bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return absl::InternalError(absl::StrCat("read error on ", path));
  return h.Finish();
}

}  // namespace dd
