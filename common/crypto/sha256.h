// SHA-256 through OpenSSL's libcrypto (already linked by gRPC).
#ifndef COMMON_CRYPTO_SHA256_H_
#define COMMON_CRYPTO_SHA256_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dd {

using Sha256Digest = std::array<uint8_t, 32>;

// Incremental hasher. Not thread-safe; one per stream of bytes.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;

  // Appends `data` to the hashed message.
  void Update(absl::string_view data);
  void Update(const void* data, size_t size);

  // Returns the digest of everything appended and resets the hasher, so the
  // object can hash a new message.
  Sha256Digest Finish();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Digest of `data` in one call.
Sha256Digest Sha256Of(absl::string_view data);

// Lower-case hexadecimal form (64 characters).
std::string DigestToHex(const Sha256Digest& digest);

// Parses 64 hexadecimal characters; InvalidArgument otherwise.
absl::StatusOr<Sha256Digest> DigestFromHex(absl::string_view hex);

// Hashes the file at `path` from its first byte to its end, reading in bounded
// blocks. NotFound / PermissionDenied / Internal on I/O errors.
absl::StatusOr<Sha256Digest> Sha256OfFile(const std::string& path);

}  // namespace dd

#endif  // COMMON_CRYPTO_SHA256_H_
