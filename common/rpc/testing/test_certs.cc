#include "common/rpc/testing/test_certs.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/io/file_util.h"

namespace dd::testing {

absl::StatusOr<TestCerts> MakeTestCerts(const std::string& dir) {
  TestCerts certs{dir + "/ca.pem", dir + "/server.pem", dir + "/server.key"};
  std::string ext = dir + "/san.ext";
  absl::Status s = WriteFileAtomically(
      ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  if (!s.ok()) return s;
  std::string cmd = absl::StrCat(
      "set -e; cd '", dir, "';",
      "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=dd-test-ca "
      "-keyout ca.key -out ca.pem;",
      "openssl req -newkey rsa:2048 -nodes -subj /CN=localhost "
      "-keyout server.key -out server.csr;",
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
      "-days 2 -extfile san.ext -out server.pem",
      " >/dev/null 2>&1");
  if (std::system(cmd.c_str()) != 0) {
    return absl::InternalError("openssl failed to make test certificates: " + cmd);
  }
  return certs;
}

}  // namespace dd::testing
