// Test-only: the project's servers as child processes on loopback, the way
// the multi-process suites start them (tests/security, tests/integration).
// Each writes its log to DIR/NAME.log and is killed with the Subprocess.
#ifndef TESTS_TESTING_TEST_SERVERS_H_
#define TESTS_TESTING_TEST_SERVERS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/testing/subprocess.h"

namespace dd::testing {

struct RunningServer {
  Subprocess process;
  int port = 0;
  std::string address;  // 127.0.0.1:port
};

// Writes `samples` generated images with captions to DIR/data
// (make_shapes_dataset, 16x16 pixels).
absl::Status MakeShapesDataset(const std::string& dir, int samples);

// dataset_server on DIR/data (work dir DIR/dswork), token from DIR/token,
// plus `extra` flags; waits until it listens. The port file is
// DIR/ds_port.
absl::StatusOr<RunningServer> StartDatasetServer(const std::string& dir,
                                                 const std::vector<std::string>& extra = {});

// coordinator on `dataset_address` with DIR/run.json, its ledger in
// DIR/ledger, token from DIR/token, plus `extra` flags; waits until it
// listens. The port file is DIR/port.
absl::StatusOr<RunningServer> StartCoordinator(const std::string& dir,
                                               const std::string& dataset_address,
                                               const std::vector<std::string>& extra = {});

}  // namespace dd::testing

#endif  // TESTS_TESTING_TEST_SERVERS_H_
