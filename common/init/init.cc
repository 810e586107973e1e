#include "common/init/init.h"

#include <gflags/gflags.h>
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

}  // namespace dd
