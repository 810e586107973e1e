#include "common/rpc/auth.h"

#include <openssl/crypto.h>

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/crypto/sha256.h"
#include "common/io/file_util.h"

namespace dd {
namespace {

constexpr size_t kMinTokenLength = 16;
constexpr size_t kMaxTokenLength = 4096;

absl::Status ValidateToken(absl::string_view token, absl::string_view source) {
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("auth token from ", source, " is empty"));
  }
  if (token.size() < kMinTokenLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "auth token from ", source, " has ", token.size(),
        " characters; use at least ", kMinTokenLength,
        " (e.g. `openssl rand -hex 32`)"));
  }
  if (token.size() > kMaxTokenLength) {
    return absl::InvalidArgumentError(absl::StrCat("auth token from ", source, " is too long"));
  }
  for (char c : token) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x21 || u > 0x7e) {
      return absl::InvalidArgumentError(absl::StrCat(
          "auth token from ", source,
          " contains whitespace or non-printable characters"));
    }
  }
  return absl::OkStatus();
}

class BearerTokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(const std::string* header_value)
      : header_value_(header_value) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *header_value_});
    }
    methods->Proceed();
  }

 private:
  const std::string* header_value_;  // Owned by the factory, which outlives calls.
};

}  // namespace

absl::StatusOr<std::string> LoadAuthToken(const std::string& token_file) {
  std::string token;
  std::string source;
  if (!token_file.empty()) {
    auto contents = ReadFileToString(token_file, kMaxTokenLength + 64);
    if (!contents.ok()) return contents.status();
    token = std::move(*contents);
    source = token_file;
  } else if (const char* env = std::getenv(kAuthTokenEnvVar); env != nullptr) {
    token = env;
    source = kAuthTokenEnvVar;
  } else {
    return absl::NotFoundError(absl::StrCat(
        "no auth token: give --auth_token_file or set ", kAuthTokenEnvVar));
  }
  absl::string_view trimmed = absl::StripTrailingAsciiWhitespace(token);
  if (absl::Status s = ValidateToken(trimmed, source); !s.ok()) return s;
  return std::string(trimmed);
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  Sha256Digest da = Sha256Of(a);
  Sha256Digest db = Sha256Of(b);
  return CRYPTO_memcmp(da.data(), db.data(), da.size()) == 0;
}

TokenAuthProcessor::TokenAuthProcessor(std::string token)
    : expected_header_(absl::StrCat("Bearer ", token)) {}

grpc::Status TokenAuthProcessor::Process(const InputMetadata& auth_metadata,
                                         grpc::AuthContext* context,
                                         OutputMetadata* consumed_auth_metadata,
                                         OutputMetadata* /*response_metadata*/) {
  auto path = auth_metadata.find(":path");
  if (path != auth_metadata.end() &&
      absl::StartsWith(absl::string_view(path->second.data(), path->second.size()),
                       kHealthServicePathPrefix)) {
    return grpc::Status::OK;
  }
  auto header = auth_metadata.find("authorization");
  if (header == auth_metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing `authorization: Bearer <token>` metadata");
  }
  absl::string_view given(header->second.data(), header->second.size());
  if (!ConstantTimeEquals(given, expected_header_)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "invalid auth token");
  }
  // Keep the secret out of the metadata that handlers (and their logs) see.
  consumed_auth_metadata->insert({"authorization", std::string(given)});
  context->AddProperty("dd.authenticated", "bearer");
  return grpc::Status::OK;
}

BearerTokenInterceptorFactory::BearerTokenInterceptorFactory(std::string token)
    : header_value_(absl::StrCat("Bearer ", token)) {}

grpc::experimental::Interceptor* BearerTokenInterceptorFactory::CreateClientInterceptor(
    grpc::experimental::ClientRpcInfo* /*info*/) {
  return new BearerTokenInterceptor(&header_value_);
}

}  // namespace dd
