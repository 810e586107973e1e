#include "common/init/init.h"

#include <gflags/gflags.h>

#include <malloc.h>

#include <filesystem>
#include <iostream>
#include <glog/logging.h>

namespace dd {

void InitProcess(const char* usage, int* argc, char*** argv) {
  gflags::SetUsageMessage(usage);
  // Logs go to stderr unless the user asks otherwise on the command line.
  FLAGS_logtostderr = true;
  gflags::ParseCommandLineFlags(argc, argv, /*remove_flags=*/true);
  google::InitGoogleLogging((*argv)[0]);
  google::InstallFailureSignalHandler();
  // Parts, frames and chunk buffers of 0.5-4 MiB are allocated and freed all
  // the time. By default glibc maps each such buffer afresh (or trims the
  // heap it came from), so every one is zeroed and page-faulted in again;
  // on the dev VM that was the largest single cost of an averaging round.
  // Keeping them in the heap (up to 256 MiB freed before trimming) made the
  // uncompressed loopback averaging round 6-14 % faster; the 8-bit one
  // moved within noise (docs/benchmarks.md, butterfly section).
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

int RunMain(const char* usage, int argc, char** argv,
            const std::function<absl::Status(int argc, char** argv)>& run) {
  InitProcess(usage, &argc, &argv);
  absl::Status status = run(argc, argv);
  if (!status.ok()) {
    std::cerr << std::filesystem::path(argv[0]).filename().string() << ": " << status
              << std::endl;
    return 1;
  }
  return 0;
}

}  // namespace dd
