// Test-only: a throw-away CA and a server certificate for localhost and
// 127.0.0.1, made with the `openssl` command-line tool in a temporary folder.
#ifndef COMMON_RPC_TESTING_TEST_CERTS_H_
#define COMMON_RPC_TESTING_TEST_CERTS_H_

#include <string>

#include "absl/status/statusor.h"

namespace dd::testing {

struct TestCerts {
  std::string ca_cert;      // path of the CA certificate (PEM)
  std::string server_cert;  // path of the server certificate (PEM)
  std::string server_key;   // path of its private key (PEM)
};

// Creates the files under `dir` (which must exist).
absl::StatusOr<TestCerts> MakeTestCerts(const std::string& dir);

}  // namespace dd::testing

#endif  // COMMON_RPC_TESTING_TEST_CERTS_H_
