#include "common/rpc/security.h"

#include <gflags/gflags.h>
#include <glog/logging.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/io/file_util.h"
#include "common/rpc/auth.h"
#include "common/rpc/ip_address.h"

DEFINE_string(auth_token_file, "",
              "File holding the run's shared bearer token (else the "
              "DD_AUTH_TOKEN environment variable is read).");
DEFINE_bool(allow_unauthenticated, false,
            "Serve/call without a token. For throw-away local experiments only.");
DEFINE_bool(insecure, false,
            "Client: allow plain-text connections to addresses that are not loopback "
            "(the token then crosses the network in clear).");
DEFINE_string(tls_cert, "", "PEM certificate chain (server: enables TLS; client: "
                            "client certificate).");
DEFINE_string(tls_key, "", "PEM private key for --tls_cert.");
DEFINE_string(tls_ca, "", "PEM root certificates (client: verify the server; "
                          "server: verify client certificates when presented).");

namespace dd {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  auto pem = ReadFileToString(path, 1 << 20);
  if (!pem.ok()) {
    return absl::Status(pem.status().code(),
                        absl::StrCat("cannot read ", what, ": ", pem.status().message()));
  }
  if (pem->find("-----BEGIN") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", path, " is not a PEM file"));
  }
  return pem;
}

}  // namespace

absl::StatusOr<SecurityConfig> SecurityConfigFromFlags() {
  SecurityConfig config;
  config.allow_unauthenticated = FLAGS_allow_unauthenticated;
  config.insecure = FLAGS_insecure;
  config.tls_cert_file = FLAGS_tls_cert;
  config.tls_key_file = FLAGS_tls_key;
  config.tls_ca_file = FLAGS_tls_ca;
  auto token = LoadAuthToken(FLAGS_auth_token_file);
  if (token.ok()) {
    config.auth_token = *token;
  } else if (!(token.status().code() == absl::StatusCode::kNotFound &&
               FLAGS_auth_token_file.empty() && config.allow_unauthenticated)) {
    return token.status();
  }
  return config;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const SecurityConfig& config) {
  if (config.auth_token.empty() && !config.allow_unauthenticated) {
    return absl::FailedPreconditionError(
        "no auth token configured: give --auth_token_file or DD_AUTH_TOKEN "
        "(or --allow_unauthenticated for a local experiment)");
  }
  if (config.tls_cert_file.empty() != config.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key must be given together");
  }
  std::shared_ptr<grpc::ServerCredentials> creds;
  if (!config.tls_cert_file.empty()) {
    grpc::SslServerCredentialsOptions options;
    auto cert = ReadPem(config.tls_cert_file, "--tls_cert");
    if (!cert.ok()) return cert.status();
    auto key = ReadPem(config.tls_key_file, "--tls_key");
    if (!key.ok()) return key.status();
    options.pem_key_cert_pairs.push_back({*key, *cert});
    if (!config.tls_ca_file.empty()) {
      auto ca = ReadPem(config.tls_ca_file, "--tls_ca");
      if (!ca.ok()) return ca.status();
      options.pem_root_certs = *ca;
      // Verify a client certificate when one is presented, but do not require
      // one: the bearer token authenticates, and probes carry no certificate.
      options.client_certificate_request =
          GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    creds = grpc::SslServerCredentials(options);
  } else {
    if (!config.tls_ca_file.empty()) {
      return absl::InvalidArgumentError("--tls_ca on a server needs --tls_cert and --tls_key");
    }
    creds = grpc::experimental::LocalServerCredentials(LOCAL_TCP);
  }
  if (!config.auth_token.empty()) {
    creds->SetAuthMetadataProcessor(
        std::make_shared<TokenAuthProcessor>(config.auth_token, config.peer_verifier));
  } else {
    LOG(WARNING) << "serving WITHOUT authentication (--allow_unauthenticated)";
  }
  return creds;
}

bool IsLoopbackTarget(const std::string& target) {
  absl::string_view t = target;
  if (absl::StartsWith(t, "unix:") || absl::StartsWith(t, "unix-abstract:")) return true;
  for (absl::string_view scheme : {"dns:///", "ipv4:", "ipv6:", "dns:"}) {
    if (absl::ConsumePrefix(&t, scheme)) break;
  }
  return IsLoopbackHost(HostOf(t));
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const SecurityConfig& config) {
  if (!config.UsesTls()) return grpc::InsecureChannelCredentials();
  if (config.tls_cert_file.empty() != config.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key must be given together");
  }
  grpc::SslCredentialsOptions options;
  if (!config.tls_ca_file.empty()) {
    auto ca = ReadPem(config.tls_ca_file, "--tls_ca");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
  }
  if (!config.tls_cert_file.empty()) {
    auto cert = ReadPem(config.tls_cert_file, "--tls_cert");
    if (!cert.ok()) return cert.status();
    auto key = ReadPem(config.tls_key_file, "--tls_key");
    if (!key.ok()) return key.status();
    options.pem_cert_chain = *cert;
    options.pem_private_key = *key;
  }
  return grpc::SslCredentials(options);
}

}  // namespace dd
