// Benchmark: coordinator acquire + complete operations per second and p50/p99
// latency with 1 and 64 concurrent clients over loopback gRPC (RocksDB
// ledger, synced writes), against raw synced RocksDB WriteBatches of the same
// size on the same disk in the same run.
//
//   bazel build //services/coordinator:coordinator_bench && \
//     bazel-bin/services/coordinator/coordinator_bench --seconds=5
#include <algorithm>
#include <atomic>
#include <filesystem>
#include <iostream>
#include <thread>

#include <gflags/gflags.h>
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/init/init.h"
#include "common/metrics/prometheus.h"
#include "common/rpc/auth.h"
#include "common/rpc/channel.h"
#include "common/rpc/server.h"
#include "services/coordinator/coordinator_service.h"

DEFINE_double(seconds, 5, "Duration of each measurement.");
DEFINE_string(dir, "", "Folder for the databases (default: a temp folder).");
DEFINE_int32(chunks, 20000, "Chunks in the ledger.");
DEFINE_bool(rpc_metrics, false,
            "Count and time every RPC as the coordinator binary does (common/rpc/rpc_metrics).");

namespace {

using namespace dd::coordinator;  // NOLINT: a benchmark main

constexpr char kToken[] = "bench-token-0123456789abcdef";

struct Result {
  double ops_per_s;
  double p50_ms, p99_ms;
};

// Runs `op` in `threads` threads for --seconds; each call is one operation.
template <typename Op>
Result Measure(int threads, Op op) {
  std::vector<std::vector<double>> lat(threads);
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  absl::Time t0 = absl::Now();
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      auto state = op.Init(t);
      while (!stop) {
        absl::Time a = absl::Now();
        op.Run(state);
        lat[t].push_back(absl::ToDoubleMilliseconds(absl::Now() - a));
      }
    });
  }
  absl::SleepFor(absl::Seconds(FLAGS_seconds));
  stop = true;
  for (auto& t : ts) t.join();
  double secs = absl::ToDoubleSeconds(absl::Now() - t0);
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) { return all.empty() ? 0 : all[std::min(all.size() - 1, size_t(p * all.size()))]; };
  return {all.size() / secs, pct(0.5), pct(0.99)};
}

// Baseline: one synced WriteBatch of two ~60-byte records per operation (what
// an acquire or a complete writes).
struct RawRocks {
  rocksdb::DB* db;
  struct State { uint64_t i; int t; };
  State Init(int t) { return {0, t}; }
  void Run(State& s) {
    rocksdb::WriteBatch b;
    std::string v(60, 'x');
    b.Put(absl::StrFormat("chunk/%d/%d", s.t, s.i % 1000), v);
    b.Put("meta", v);
    rocksdb::WriteOptions o;
    o.sync = true;
    if (!db->Write(o, &b).ok()) std::abort();
    ++s.i;
  }
};

// One operation = AcquireChunks(1) + CompleteChunk over gRPC (two synced
// ledger writes), so its rate is compared with half the raw write rate.
struct AcquireComplete {
  std::string target;
  struct State {
    std::unique_ptr<v1::Coordinator::Stub> stub;
    v1::PeerRef peer;
  };
  State Init(int) {
    dd::SecurityConfig c;
    c.auth_token = kToken;
    c.call_token = std::make_shared<dd::CallToken>(kToken);
    State s{v1::Coordinator::NewStub(*dd::MakeChannel(target, c)), {}};
    grpc::ClientContext ctx;
    v1::JoinRequest join;
    join.set_client_only(true);
    v1::JoinResponse r;
    if (!s.stub->Join(&ctx, join, &r).ok()) std::abort();
    // Later calls carry the peer credential, as a trainer's do (each one
    // is verified: part of what is measured).
    c.call_token->SetPeerCredential(r.peer_token());
    s.peer.set_peer_id(r.peer_id());
    s.peer.set_incarnation(r.incarnation());
    return s;
  }
  void Run(State& s) {
    grpc::ClientContext c1;
    v1::AcquireChunksRequest a;
    *a.mutable_peer() = s.peer;
    a.set_max_chunks(1);
    v1::AcquireChunksResponse leases;
    if (!s.stub->AcquireChunks(&c1, a, &leases).ok()) std::abort();
    for (const auto& l : leases.leases()) {
      grpc::ClientContext c2;
      v1::CompleteChunkRequest d;
      *d.mutable_peer() = s.peer;
      d.set_chunk_id(l.chunk_id());
      d.set_lease_id(l.lease_id());
      d.set_samples_trained(l.num_samples());
      v1::CompleteChunkResponse r;
      if (!s.stub->CompleteChunk(&c2, d, &r).ok()) std::abort();
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  dd::InitProcess("coordinator_bench", &argc, &argv);
  std::string dir = FLAGS_dir.empty()
                        ? (std::filesystem::temp_directory_path() / "dd_coordinator_bench").string()
                        : FLAGS_dir;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);

  rocksdb::Options options;
  options.create_if_missing = true;
  rocksdb::DB* raw = nullptr;
  if (!rocksdb::DB::Open(options, dir + "/raw", &raw).ok()) return 1;
  RawRocks raw_op{raw};
  Result raw1 = Measure(1, raw_op);
  Result raw64 = Measure(64, raw_op);
  delete raw;

  auto store = OpenRocksDbKvStore(dir + "/ledger");
  if (!store.ok()) return 1;
  auto ledger = ChunkLedger::Open(std::move(*store),
                                  {"bench", "m", std::vector<uint32_t>(FLAGS_chunks, 256)},
                                  dd::RealClock());
  if (!ledger.ok()) return 1;
  struct NoProbe : HealthProber {
    void Probe(const std::string&, std::function<void(bool)> done) override { done(false); }
  } prober;
  PeerLiveness liveness(ledger->get(), &prober, dd::RealClock(), {});
  RoundPlanner rounds({}, dd::RealClock());
  auto issuer = dd::CredentialIssuer::Generate();
  if (!issuer.ok()) return 1;
  CoordinatorCore core(ledger->get(), &liveness, &rounds, {"bench", "{}"}, {}, dd::RealClock(),
                       issuer->get());
  CoordinatorService service(&core, 16);
  dd::ServerOptions so;
  so.listen_address = "127.0.0.1:0";
  so.security.auth_token = kToken;
  so.security.peer_verifier = std::make_shared<dd::PeerVerifierSlot>();
  so.security.peer_verifier->Set(*dd::CredentialVerifier::FromPublicKey((*issuer)->public_key()));
  dd::metrics::MetricsRegistry registry;
  if (FLAGS_rpc_metrics) so.metrics = &registry;
  auto host = dd::ServiceHost::Start(so, {&service});
  if (!host.ok()) return 1;
  AcquireComplete op{absl::StrFormat("127.0.0.1:%d", (*host)->port())};
  Result c1 = Measure(1, op);
  Result c64 = Measure(64, op);
  (*host)->Shutdown(absl::Seconds(1));

  auto row = [](const char* name, Result r, double base) {
    std::cout << absl::StrFormat("%-58s %10.0f %8.2f %8.2f %7.2f\n", name, r.ops_per_s, r.p50_ms,
                                 r.p99_ms, base > 0 ? r.ops_per_s / base : 1.0);
  };
  std::cout << absl::StrFormat("%-58s %10s %8s %8s %7s\n", "measurement", "ops/s", "p50 ms",
                               "p99 ms", "ratio");
  row("raw RocksDB synced WriteBatch, 1 writer", raw1, 0);
  row("raw RocksDB synced WriteBatch, 64 writers", raw64, 0);
  row("acquire+complete over gRPC, 1 client (vs raw/2, 1 writer)", c1, raw1.ops_per_s / 2);
  row("acquire+complete over gRPC, 64 clients (vs raw/2, 64 writers)", c64, raw64.ops_per_s / 2);
  std::filesystem::remove_all(dir);
  return 0;
}
