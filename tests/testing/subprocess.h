// Test-only: run real binaries as child processes, kill them, wait for them.
// Integration and fault tests use it to start servers and SIGKILL them.
#ifndef TESTS_TESTING_SUBPROCESS_H_
#define TESTS_TESTING_SUBPROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dd::testing {

// Path of a binary built by this workspace, from the test's runfiles
// ("services/dataset/dataset_server").
std::string RunfilePath(const std::string& workspace_relative);

class Subprocess {
 public:
  // Starts `argv` with stdout and stderr appended to `log_path`.
  static absl::StatusOr<Subprocess> Start(const std::vector<std::string>& argv,
                                          const std::string& log_path);
  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  // Kills (SIGKILL) and reaps the child if it is still running.
  ~Subprocess();

  pid_t pid() const { return pid_; }

  // Sends `signo` to the child.
  void Signal(int signo);

  // Waits up to `timeout` for the child to exit; returns its exit code (or
  // 128 + signal). DeadlineExceeded if it is still running.
  absl::StatusOr<int> Wait(absl::Duration timeout);

 private:
  explicit Subprocess(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;
  bool reaped_ = false;
};

// The whole of a child's log file (empty when it does not exist yet), for
// failure messages.
std::string ReadLog(const std::string& path);

// Polls until `path` exists and holds a number (a --port_file); returns it.
absl::StatusOr<int> WaitForPortFile(const std::string& path, absl::Duration timeout);

}  // namespace dd::testing

#endif  // TESTS_TESTING_SUBPROCESS_H_
