// Process start-up shared by every binary: gflags parsing, glog to stderr,
// a failure signal handler that prints a stack trace, malloc settings for
// large short-lived buffers.
#ifndef COMMON_INIT_INIT_H_
#define COMMON_INIT_INIT_H_

#include <functional>

#include "absl/status/status.h"

namespace dd {

// Parses the command line (removing recognised flags from argc/argv), sends
// glog output to stderr (containers and CI collect stderr), installs glog's
// failure signal handler, and keeps buffers under 64 MiB in the heap rather
// than mapping each afresh. Call first thing in main().
void InitProcess(const char* usage, int* argc, char*** argv);

// The whole main() of a binary: InitProcess, then `run` with the arguments
// left after flag parsing; a failure is printed as "<program>: <status>" on
// stderr and turns into exit code 1.
int RunMain(const char* usage, int argc, char** argv,
            const std::function<absl::Status(int argc, char** argv)>& run);

}  // namespace dd

#endif  // COMMON_INIT_INIT_H_
