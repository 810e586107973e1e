// Soak benchmark: do the coordinator and the dataset server hold their
// memory under churn? (The prototype's servers grew until restarted.) Both
// binaries run as child processes on loopback; each round, `--peers` peers
// join, lease a chunk, read it from the dataset server, complete it, report
// progress (rounds open and, with nobody averaging, fail) and leave. After
// each round the servers' resident memory (VmRSS) is read from /proc. A leak
// shows as growth proportional to the rounds; the baseline is each server's
// RSS after the first round (allocators and caches warm), and the ratio is
// the last round's against it.
//
//   bazel run -c opt //tests/soak:services_soak_bench -- --rounds=20 --peers=200
#include <atomic>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <gflags/gflags.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/init/init.h"
#include "common/rpc/auth.h"
#include "common/rpc/channel.h"
#include "protos/coordinator.grpc.pb.h"
#include "protos/dataset.grpc.pb.h"
#include "tests/testing/test_servers.h"

DEFINE_int32(rounds, 20, "Rounds of churn.");
DEFINE_int32(peers, 200, "Peers that join and leave in each round.");
DEFINE_int32(threads, 8, "Client threads.");
DEFINE_string(dir, "", "Working folder (default: a fresh one under /tmp).");
DEFINE_string(forget_peers_after, "24h",
              "The coordinator's --forget_peers_after (records of departed peers are kept "
              "this long, by design).");
DEFINE_bool(shared_dataset_channel, false,
            "Read chunks over one channel for all peers instead of a new connection per "
            "peer (tells growth per connection from growth per read).");

namespace {

namespace cv1 = distdiff::coordinator::v1;
namespace dv1 = distdiff::dataset::v1;

constexpr char kToken[] = "soak-bench-token-0123456789abcdef";

// The process's resident set in MiB, from /proc/PID/status; -1 if unknown.
double RssMiB(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string key;
  while (status >> key) {
    if (key == "VmRSS:") {
      double kib = 0;
      status >> kib;
      return kib / 1024.0;
    }
    std::getline(status, key);
  }
  return -1;
}

dd::SecurityConfig WithToken(const std::string& credential) {
  dd::SecurityConfig c;
  c.auth_token = kToken;
  c.call_token = std::make_shared<dd::CallToken>(kToken);
  c.call_token->SetPeerCredential(credential);
  return c;
}

// One peer's life: join, lease, read, complete, report, leave. The first
// failed call is returned (and counted by the caller, not fatal: the servers'
// memory is what is measured), so "0 errors" means every call succeeded.
absl::Status PeerLife(const std::string& coordinator,
                      const std::shared_ptr<grpc::Channel>& dataset, uint64_t global_step) {
  auto run = cv1::Coordinator::NewStub(*dd::MakeChannel(coordinator, WithToken("")));
  cv1::JoinRequest join;
  join.set_client_only(true);
  cv1::JoinResponse joined;
  grpc::Status s = run->Join(dd::MakeCallContext(absl::Seconds(30), true).get(), join, &joined);
  if (!s.ok()) return absl::UnavailableError(absl::StrCat("join: ", s.error_message()));
  auto peer = cv1::Coordinator::NewStub(
      *dd::MakeChannel(coordinator, WithToken(joined.peer_token())));
  auto call = [] { return dd::MakeCallContext(absl::Seconds(30)); };
  cv1::AcquireChunksRequest acquire;
  acquire.set_max_chunks(1);
  cv1::AcquireChunksResponse leases;
  s = peer->AcquireChunks(call().get(), acquire, &leases);
  if (!s.ok()) return absl::UnavailableError(absl::StrCat("acquire: ", s.error_message()));
  uint64_t samples = 0;
  {
    auto reader = dv1::Dataset::NewStub(dataset);
    for (const cv1::Lease& lease : leases.leases()) {
      dv1::ReadChunkRequest read;
      read.set_chunk_id(lease.chunk_id());
      auto context = call();
      auto stream = reader->ReadChunk(context.get(), read);
      dv1::ChunkFrame frame;
      while (stream->Read(&frame)) {
      }
      s = stream->Finish();
      if (!s.ok()) return absl::UnavailableError(absl::StrCat("read: ", s.error_message()));
      cv1::CompleteChunkRequest complete;
      complete.set_chunk_id(lease.chunk_id());
      complete.set_lease_id(lease.lease_id());
      complete.set_samples_trained(lease.num_samples());
      cv1::CompleteChunkResponse done;
      s = peer->CompleteChunk(call().get(), complete, &done);
      if (!s.ok()) return absl::UnavailableError(absl::StrCat("complete: ", s.error_message()));
      samples += lease.num_samples();
    }
  }
  cv1::ReportProgressRequest report;
  report.set_global_step(global_step);
  report.set_samples_accumulated(samples);
  report.set_samples_per_second(1);
  cv1::ReportProgressResponse reported;
  s = peer->ReportProgress(call().get(), report, &reported);
  // FAILED_PRECONDITION: a round opened since the step was read (expected).
  if (!s.ok() && s.error_code() != grpc::StatusCode::FAILED_PRECONDITION) {
    return absl::UnavailableError(absl::StrCat("report: ", s.error_message()));
  }
  cv1::LeaveResponse left;
  s = peer->Leave(call().get(), cv1::LeaveRequest(), &left);
  if (!s.ok()) return absl::UnavailableError(absl::StrCat("leave: ", s.error_message()));
  return absl::OkStatus();
}

absl::Status Run() {
  const std::string dir =
      FLAGS_dir.empty() ? absl::StrCat("/tmp/dd_soak_", getpid()) : FLAGS_dir;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/token") << kToken;
  std::ofstream(dir + "/run.json")
      << R"({"run_id": "soak", "model": "tiny", "target_batch_size": 64})";
  if (absl::Status s = dd::testing::MakeShapesDataset(dir, 256); !s.ok()) return s;
  auto dataset = dd::testing::StartDatasetServer(dir, {"--chunk_size=4"});
  if (!dataset.ok()) return dataset.status();
  // Rounds open at every 64 samples and nobody averages them: a short
  // deadline lets them fail within the round.
  auto coordinator = dd::testing::StartCoordinator(
      dir, dataset->address,
      {"--round_timeout=2s", "--heartbeat_ttl=30s", "--forget_peers_after=" + FLAGS_forget_peers_after});
  if (!coordinator.ok()) return coordinator.status();
  const pid_t coordinator_pid = coordinator->process.pid();
  const pid_t dataset_pid = dataset->process.pid();
  std::cout << absl::StrFormat("%5s %8s %10s %14s %12s\n", "round", "peers", "errors",
                               "coordinator MiB", "dataset MiB");
  double coordinator_base = 0, dataset_base = 0, coordinator_last = 0, dataset_last = 0;
  auto state_stub = cv1::Coordinator::NewStub(*dd::MakeChannel(coordinator->address, WithToken("")));
  std::shared_ptr<grpc::Channel> shared_dataset;
  if (FLAGS_shared_dataset_channel) shared_dataset = *dd::MakeChannel(dataset->address, WithToken(""));
  const absl::Time start = absl::Now();
  for (int round = 1; round <= FLAGS_rounds; ++round) {
    cv1::RunState state;
    (void)state_stub->GetRunState(dd::MakeCallContext(absl::Seconds(10)).get(),
                                  cv1::GetRunStateRequest(), &state);
    std::atomic<int> next{0}, errors{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < FLAGS_threads; ++t) {
      threads.emplace_back([&] {
        while (next.fetch_add(1) < FLAGS_peers) {
          auto channel = shared_dataset ? shared_dataset
                                        : *dd::MakeChannel(dataset->address, WithToken(""));
          if (!PeerLife(coordinator->address, channel, state.global_step()).ok()) {
            ++errors;
          }
        }
      });
    }
    for (auto& t : threads) t.join();
    coordinator_last = RssMiB(coordinator_pid);
    dataset_last = RssMiB(dataset_pid);
    if (round == 1) {
      coordinator_base = coordinator_last;
      dataset_base = dataset_last;
    }
    const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
    std::cout << absl::StrFormat("%5d %8d %10d %14.1f %12.1f   (%.0f s, ETA %.0f s)\n", round,
                                 round * FLAGS_peers, errors.load(), coordinator_last,
                                 dataset_last, elapsed,
                                 elapsed / round * (FLAGS_rounds - round));
  }
  std::cout << absl::StrFormat(
      "coordinator: %.1f MiB after round 1, %.1f after round %d (ratio %.2f)\n"
      "dataset server: %.1f MiB after round 1, %.1f after round %d (ratio %.2f)\n",
      coordinator_base, coordinator_last, FLAGS_rounds, coordinator_last / coordinator_base,
      dataset_base, dataset_last, FLAGS_rounds, dataset_last / dataset_base);
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  return dd::RunMain("services_soak_bench [--rounds=N] [--peers=N]", argc, argv,
                     [](int, char**) { return Run(); });
}
