// Process start-up shared by every binary: gflags parsing, glog to stderr,
// a failure signal handler that prints a stack trace.
#ifndef COMMON_INIT_INIT_H_
#define COMMON_INIT_INIT_H_

namespace dd {

// Parses the command line (removing recognised flags from argc/argv), sends
// glog output to stderr (containers and CI collect stderr), and installs
// glog's failure signal handler. Call first thing in main().
void InitProcess(const char* usage, int* argc, char*** argv);

}  // namespace dd

#endif  // COMMON_INIT_INIT_H_
