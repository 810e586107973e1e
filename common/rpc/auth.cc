#include "common/rpc/auth.h"

#include <openssl/crypto.h>

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
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

constexpr absl::string_view kBearerCredentialPrefix = "Bearer ddp1.";
constexpr size_t kBearerPrefixLength = 7;  // "Bearer "

class BearerTokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(const CallToken* token) : token_(token) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      auto* metadata = methods->GetSendInitialMetadata();
      std::string header = token_->HeaderValue();
      // A call that chose its own credential (Join sends the run token) keeps it.
      if (!header.empty() && metadata->find("authorization") == metadata->end()) {
        metadata->insert({"authorization", std::move(header)});
      }
    }
    methods->Proceed();
  }

 private:
  const CallToken* token_;  // Owned by the factory, which outlives calls.
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

void CallToken::SetPeerCredential(std::string credential) {
  absl::MutexLock lock(&mu_);
  peer_credential_ = std::move(credential);
}

std::string CallToken::peer_credential() const {
  absl::MutexLock lock(&mu_);
  return peer_credential_;
}

std::string CallToken::HeaderValue() const {
  absl::MutexLock lock(&mu_);
  const std::string& value = peer_credential_.empty() ? run_token_ : peer_credential_;
  return value.empty() ? "" : absl::StrCat("Bearer ", value);
}

void PeerVerifierSlot::Set(std::shared_ptr<const CredentialVerifier> verifier) {
  absl::MutexLock lock(&mu_);
  verifier_ = std::move(verifier);
}

std::shared_ptr<const CredentialVerifier> PeerVerifierSlot::Get() const {
  absl::MutexLock lock(&mu_);
  return verifier_;
}

TokenAuthProcessor::TokenAuthProcessor(std::string token,
                                       std::shared_ptr<const PeerVerifierSlot> verifier)
    : expected_header_(absl::StrCat("Bearer ", token)), verifier_(std::move(verifier)) {}

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
  if (auth_metadata.count("authorization") > 1) {
    // Handlers read the caller from the first one (CallerOf): allow no
    // second opinion.
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "more than one authorization header");
  }
  absl::string_view given(header->second.data(), header->second.size());
  if (absl::StartsWith(given, kBearerCredentialPrefix)) {
    std::shared_ptr<const CredentialVerifier> verifier =
        verifier_ == nullptr ? nullptr : verifier_->Get();
    if (verifier == nullptr) {
      // A server that learns the key later (a trainer before its Join, a
      // dataset service before the coordinator wrote the key): retryable.
      // One that never will has no slot at all.
      if (verifier_ != nullptr) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                            "this server does not know the run's credential key yet; retry");
      }
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "this server does not accept peer credentials");
    }
    auto claims = verifier->Verify(given.substr(kBearerPrefixLength), absl::Now());
    if (!claims.ok()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(claims.status().message()));
    }
  } else if (!ConstantTimeEquals(given, expected_header_)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "invalid auth token");
  }
  // The header is left in the metadata: handlers learn the caller from it.
  // None of them logs metadata.
  return grpc::Status::OK;
}

Caller CallerOf(const std::multimap<grpc::string_ref, grpc::string_ref>& client_metadata) {
  auto header = client_metadata.find("authorization");
  if (header == client_metadata.end()) return Caller::Unchecked();
  absl::string_view given(header->second.data(), header->second.size());
  if (!absl::StartsWith(given, kBearerCredentialPrefix)) return Caller::RunToken();
  auto claims = ParseCheckedCredential(given.substr(kBearerPrefixLength));
  // Verified by the processor, so well formed; a server without the
  // processor trusts every caller anyway, and a malformed one is no peer.
  if (!claims.ok()) return Caller::RunToken();
  if (absl::StartsWith(claims->peer_id, kInvitationPrefix) && claims->incarnation == 0) {
    return Caller::Invitation(claims->peer_id.substr(sizeof(kInvitationPrefix) - 1));
  }
  return Caller::Peer(claims->peer_id, claims->incarnation);
}

Caller CallerOf(const grpc::ServerContextBase& context) {
  Caller caller = CallerOf(context.client_metadata());
  caller.remote_ip = RemoteIpOf(context.peer());
  return caller;
}

BearerTokenInterceptorFactory::BearerTokenInterceptorFactory(
    std::shared_ptr<const CallToken> token)
    : token_(std::move(token)) {}

grpc::experimental::Interceptor* BearerTokenInterceptorFactory::CreateClientInterceptor(
    grpc::experimental::ClientRpcInfo* /*info*/) {
  return new BearerTokenInterceptor(token_.get());
}

}  // namespace dd
