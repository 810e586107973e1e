#include "common/init/init.h"

#include <gflags/gflags.h>

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
