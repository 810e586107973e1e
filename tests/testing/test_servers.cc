#include "tests/testing/test_servers.h"

#include "absl/strings/str_cat.h"

namespace dd::testing {
namespace {

absl::StatusOr<RunningServer> StartAndWait(std::vector<std::string> argv,
                                           const std::vector<std::string>& extra,
                                           const std::string& port_file,
                                           const std::string& log) {
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto process = Subprocess::Start(argv, log);
  if (!process.ok()) return process.status();
  auto port = WaitForPortFile(port_file, absl::Seconds(60));
  if (!port.ok()) {
    return absl::Status(port.status().code(),
                        absl::StrCat(port.status().message(), "; its log:\n", ReadLog(log)));
  }
  return RunningServer{std::move(*process), *port, absl::StrCat("127.0.0.1:", *port)};
}

}  // namespace

absl::Status MakeShapesDataset(const std::string& dir, int samples) {
  auto gen = Subprocess::Start({RunfilePath("trainer/tools/make_shapes_dataset"),
                                "--out_dir=" + dir + "/data",
                                absl::StrCat("--num_samples=", samples), "--width=16",
                                "--height=16"},
                               dir + "/gen.log");
  if (!gen.ok()) return gen.status();
  auto code = gen->Wait(absl::Seconds(60));
  if (!code.ok()) return code.status();
  if (*code != 0) return absl::InternalError(ReadLog(dir + "/gen.log"));
  return absl::OkStatus();
}

absl::StatusOr<RunningServer> StartDatasetServer(const std::string& dir,
                                                 const std::vector<std::string>& extra) {
  return StartAndWait({RunfilePath("services/dataset/dataset_server"),
                       "--dataset_dir=" + dir + "/data", "--work_dir=" + dir + "/dswork",
                       "--host=127.0.0.1", "--port=0", "--port_file=" + dir + "/ds_port",
                       "--auth_token_file=" + dir + "/token"},
                      extra, dir + "/ds_port", dir + "/dataset.log");
}

absl::StatusOr<RunningServer> StartCoordinator(const std::string& dir,
                                               const std::string& dataset_address,
                                               const std::vector<std::string>& extra) {
  return StartAndWait({RunfilePath("services/coordinator/coordinator"),
                       "--config=" + dir + "/run.json", "--db_dir=" + dir + "/ledger",
                       "--dataset_address=" + dataset_address, "--host=127.0.0.1", "--port=0",
                       "--port_file=" + dir + "/port", "--auth_token_file=" + dir + "/token"},
                      extra, dir + "/port", dir + "/coordinator.log");
}

}  // namespace dd::testing
