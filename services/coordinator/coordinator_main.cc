// coordinator: the durable authority of a training run (chunk ledger with
// leases, peer registry with liveness), serving distdiff.coordinator.v1.
//
//   coordinator --config=run.json --db_dir=/var/lib/dd/ledger \
//       --dataset_address=dataset:50051 --port=50050 --auth_token_file=token
#include <atomic>
#include <cstdlib>
#include <thread>

#include <gflags/gflags.h>
#include <glog/logging.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/init/init.h"
#include "common/io/file_util.h"
#include "common/metrics/http_server.h"
#include "common/metrics/prometheus.h"
#include "common/rpc/auth.h"
#include "common/rpc/channel.h"
#include "common/rpc/security.h"
#include "common/rpc/server.h"
#include "services/coordinator/coordinator_core.h"
#include "services/coordinator/coordinator_metrics.h"
#include "services/coordinator/coordinator_service.h"
#include "services/coordinator/history/newest_sample.h"
#include "services/coordinator/history/run_history.h"
#include "services/coordinator/ledger/chunk_ledger.h"
#include "services/coordinator/registry/health_prober.h"
#include "services/coordinator/registry/peer_liveness.h"
#include "services/coordinator/rounds/round_planner.h"
#include "services/coordinator/run_config.h"
#include "services/coordinator/status_page.h"
#include "services/dataset/dataset_client.h"

DEFINE_string(config, "", "Run configuration (JSON with a run_id). Required.");
DEFINE_string(db_dir, "", "RocksDB folder of the ledger. Required.");
DEFINE_string(dataset_address, "", "host:port of the dataset service. Required.");
DEFINE_string(peer_dataset_address, "",
              "host:port of the dataset service as peers dial it, when it differs from "
              "--dataset_address (peers on other machines; default: --dataset_address).");
DEFINE_string(host, "0.0.0.0", "Address to listen on.");
DEFINE_int32(port, 50050, "Port; 0 picks a free one (see --port_file).");
DEFINE_string(port_file, "", "Write the bound port here once listening.");
DEFINE_string(task_timeout, "20m", "Lease duration (the prototype's --tasktimeout).");
DEFINE_string(heartbeat_ttl, "60s", "Peers silent for this long are evicted.");
DEFINE_string(admin_token_file, "",
              "File with the admin token for AdminReleaseChunk/AdminEvictPeer "
              "(else DD_ADMIN_TOKEN; neither: admin calls disabled).");
DEFINE_string(round_timeout, "60s", "Time members get to finish an averaging round.");
DEFINE_string(dataset_wait, "5m", "How long to wait for the dataset service at start.");
DEFINE_string(credential_key_file, "",
              "Ed25519 key (PEM) that signs peer credentials; created (mode 0600) when "
              "missing. Default: credential_key.pem in --db_dir, so credentials survive "
              "restarts.");
DEFINE_string(credential_public_key_out, "",
              "Also write the credential public key (hex) here, for the dataset service's "
              "--peer_public_key_file.");
DEFINE_string(credential_ttl, "1h", "Lifetime of a peer credential; heartbeats renew it.");
DEFINE_string(eviction_ban, "1h", "How long AdminEvictPeer keeps a peer id out by default.");
DEFINE_bool(check_peer_addresses, true,
            "A joining peer may only name an IP address its call comes from (host names are "
            "not checked). Turn off only where peers reach the coordinator through another "
            "address than the one they publish and cannot publish a host name.");
DEFINE_string(forget_peers_after, "24h",
              "Records of peers gone this long are deleted (their ids can no longer be "
              "rejoined); until then each costs the coordinator about 0.26 KiB of memory "
              "(docs/benchmarks.md, services under churn).");
DEFINE_int32(join_burst, 20,
             "Joins one IP address may make at once; then one per --join_interval. More get "
             "RESOURCE_EXHAUSTED.");
DEFINE_string(join_interval, "3s", "How often an IP address regains one Join (see --join_burst).");
DEFINE_bool(limit_loopback_joins, false,
            "Also limit Joins from loopback addresses (exempt by default: a local run's "
            "trainers and their restarts all join from there).");
DEFINE_int32(admin_port, -1,
             "Serve the Admin* calls (and full listings) on --admin_host:--admin_port only, "
             "so the run's public port refuses them whatever token a caller has; 0 picks a "
             "free port (see --admin_port_file). Default (-1): on the public port, behind the "
             "admin token.");
DEFINE_string(admin_host, "127.0.0.1",
              "Address the admin port listens on (an operators' network, or loopback).");
DEFINE_string(admin_port_file, "", "Write the bound admin port here once listening.");
DEFINE_int32(shutdown_grace_s, 10, "Seconds in-flight calls get on SIGTERM.");

namespace {

using namespace dd::coordinator;  // NOLINT: a main file

absl::StatusOr<absl::Duration> DurationFlag(const std::string& value, const char* name) {
  absl::Duration d;
  if (!absl::ParseDuration(value, &d) || d <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, "=", value, " is not a positive duration (e.g. 20m, 90s)"));
  }
  return d;
}

// Reads the dataset manifest, waiting for the service to come up.
absl::StatusOr<LedgerIdentity> FetchManifest(const dd::SecurityConfig& security,
                                             const std::string& run_id, absl::Duration wait) {
  auto channel = dd::MakeChannel(FLAGS_dataset_address, security);
  if (!channel.ok()) return channel.status();
  dd::dataset::DatasetClient client(*channel);
  absl::Time give_up = absl::Now() + wait;
  absl::Status last;
  while (absl::Now() < give_up) {
    auto info = client.GetInfo(absl::Seconds(10));
    if (info.ok()) {
      auto chunks = client.ListAllChunks();
      if (chunks.ok()) {
        LedgerIdentity identity;
        identity.run_id = run_id;
        identity.manifest_sha256 = info->manifest_sha256_hex();
        for (const auto& c : *chunks) identity.chunk_samples.push_back(c.num_samples());
        LOG(INFO) << "dataset " << info->name() << ": " << chunks->size() << " chunks, "
                  << info->num_samples() << " samples, manifest "
                  << identity.manifest_sha256.substr(0, 16);
        return identity;
      }
      last = chunks.status();
    } else {
      last = info.status();
    }
    if (last.code() != absl::StatusCode::kUnavailable &&
        last.code() != absl::StatusCode::kDeadlineExceeded) {
      return last;  // UNAUTHENTICATED and the like will not fix themselves
    }
    LOG(INFO) << "waiting for the dataset service at " << FLAGS_dataset_address << ": " << last;
    absl::SleepFor(absl::Seconds(1));
  }
  return absl::UnavailableError(absl::StrCat("dataset service at ", FLAGS_dataset_address,
                                             " did not answer: ", last.message()));
}

absl::Status Run() {
  if (FLAGS_config.empty()) return absl::InvalidArgumentError("--config is required");
  if (FLAGS_db_dir.empty()) return absl::InvalidArgumentError("--db_dir is required");
  if (FLAGS_dataset_address.empty()) {
    return absl::InvalidArgumentError("--dataset_address is required");
  }
  auto config = LoadRunConfig(FLAGS_config);
  if (!config.ok()) return config.status();
  auto lease_timeout = DurationFlag(FLAGS_task_timeout, "task_timeout");
  if (!lease_timeout.ok()) return lease_timeout.status();
  auto ttl = DurationFlag(FLAGS_heartbeat_ttl, "heartbeat_ttl");
  if (!ttl.ok()) return ttl.status();
  auto wait = DurationFlag(FLAGS_dataset_wait, "dataset_wait");
  if (!wait.ok()) return wait.status();
  auto round_timeout = DurationFlag(FLAGS_round_timeout, "round_timeout");
  if (!round_timeout.ok()) return round_timeout.status();
  auto credential_ttl = DurationFlag(FLAGS_credential_ttl, "credential_ttl");
  if (!credential_ttl.ok()) return credential_ttl.status();
  auto eviction_ban = DurationFlag(FLAGS_eviction_ban, "eviction_ban");
  if (!eviction_ban.ok()) return eviction_ban.status();
  auto forget_peers_after = DurationFlag(FLAGS_forget_peers_after, "forget_peers_after");
  if (!forget_peers_after.ok()) return forget_peers_after.status();
  auto join_interval = DurationFlag(FLAGS_join_interval, "join_interval");
  if (!join_interval.ok()) return join_interval.status();
  if (FLAGS_join_burst < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--join_burst=", FLAGS_join_burst, " must be at least 1"));
  }
  auto security = dd::SecurityConfigFromFlags();
  if (!security.ok()) return security.status();

  CoordinatorOptions options;
  options.credential_ttl = *credential_ttl;
  options.eviction_ban = *eviction_ban;
  options.check_peer_addresses = FLAGS_check_peer_addresses;
  options.forget_peers_after = *forget_peers_after;
  options.join_burst = FLAGS_join_burst;
  options.join_interval = *join_interval;
  options.limit_loopback_joins = FLAGS_limit_loopback_joins;
  options.lease_timeout = *lease_timeout;
  options.heartbeat_ttl = *ttl;
  options.dataset_address =
      FLAGS_peer_dataset_address.empty() ? FLAGS_dataset_address : FLAGS_peer_dataset_address;
  if (!FLAGS_admin_token_file.empty()) {
    auto admin = dd::ReadFileToString(FLAGS_admin_token_file, 4096);
    if (!admin.ok()) return admin.status();
    options.admin_token = std::string(absl::StripTrailingAsciiWhitespace(*admin));
  } else if (const char* env = std::getenv("DD_ADMIN_TOKEN")) {
    options.admin_token = env;
  }

  auto identity = FetchManifest(*security, config->run_id, *wait);
  if (!identity.ok()) return identity.status();
  auto store = OpenRocksDbKvStore(FLAGS_db_dir);
  if (!store.ok()) return store.status();
  auto ledger = ChunkLedger::Open(std::move(*store), *identity, dd::RealClock());
  if (!ledger.ok()) return ledger.status();
  const std::string key_file = FLAGS_credential_key_file.empty()
                                   ? FLAGS_db_dir + "/credential_key.pem"
                                   : FLAGS_credential_key_file;
  auto issuer = dd::CredentialIssuer::LoadOrCreate(key_file);
  if (!issuer.ok()) return issuer.status();
  if (!FLAGS_credential_public_key_out.empty()) {
    if (absl::Status s = dd::WritePublicKeyFile(FLAGS_credential_public_key_out,
                                                (*issuer)->public_key());
        !s.ok()) {
      return s;
    }
  }
  auto verifier = dd::CredentialVerifier::FromPublicKey((*issuer)->public_key());
  if (!verifier.ok()) return verifier.status();
  security->peer_verifier = std::make_shared<dd::PeerVerifierSlot>();
  security->peer_verifier->Set(*verifier);
  LedgerStats stats = (*ledger)->Stats();
  LOG(INFO) << "ledger of run " << config->run_id << ": epoch " << stats.epoch << ", "
            << stats.done << " chunks done, " << stats.leased << " leased, "
            << stats.completions << " completions";

  dd::SecurityConfig probe_security = *security;
  probe_security.auth_token.clear();  // health checks carry no secret
  probe_security.peer_verifier.reset();
  GrpcHealthProber prober(probe_security, absl::Seconds(3));
  LivenessOptions liveness_options;
  liveness_options.ttl = *ttl;
  PeerLiveness liveness(ledger->get(), &prober, dd::RealClock(), liveness_options);
  RoundPlannerOptions round_options;
  round_options.target_batch_size = config->target_batch_size;
  round_options.reducer_audits = config->reducer_audits;
  round_options.round_timeout = *round_timeout;
  round_options.report_ttl = *ttl;
  const uint64_t step = (*ledger)->GlobalStep();
  round_options.initial_global_step = step;
  ChunkLedger* ledger_ptr = ledger->get();
  round_options.persist_step = [ledger_ptr](uint64_t s) { return ledger_ptr->SetGlobalStep(s); };
  if (step > 0) {
    // The rounds that made the step went with the old process: the peers
    // it knew confirm the weights of the step in their place.
    for (const auto& peer : (*ledger)->ActivePeers()) {
      round_options.members_at_start.push_back(peer.peer_id());
    }
    LOG(INFO) << "continuing at global step " << step << " with "
              << round_options.members_at_start.size() << " peers known";
  }
  // Prometheus metrics on --http_port: every RPC, the rounds, and the run's
  // state.
  dd::metrics::MetricsRegistry registry;
  dd::metrics::AddProcessMetrics(&registry);
  round_options.on_round_event = RoundMetrics(&registry);
  RoundPlanner rounds(round_options, dd::RealClock());
  // The run's history and newest sample grid for ddctl history and the
  // status page, beside the ledger.
  auto history = RunHistory::Open(FLAGS_db_dir + "/history.jsonl");
  if (!history.ok()) return history.status();
  std::unique_ptr<NewestSample> newest_sample = NewestSample::Open(FLAGS_db_dir);
  CoordinatorCore core(ledger->get(), &liveness, &rounds, *config, options, dd::RealClock(),
                       issuer->get(), RunRecords{history->get(), newest_sample.get()});
  const bool admin_apart = FLAGS_admin_port >= 0;
  CoordinatorService service(&core, 64, admin_apart ? AdminCalls::kElsewhere : AdminCalls::kServed);
  AddCoordinatorMetrics(&core, ledger_ptr, &registry);
  dd::ServerOptions server_options;
  server_options.listen_address = absl::StrCat(FLAGS_host, ":", FLAGS_port);
  server_options.security = *security;
  server_options.port_file = FLAGS_port_file;
  server_options.metrics = &registry;
  auto host = dd::ServiceHost::Start(server_options, {&service});
  if (!host.ok()) return host.status();
  // The admin calls on their own address: the same core, a few threads.
  CoordinatorService admin_service(&core, 4, AdminCalls::kServed);
  std::unique_ptr<dd::ServiceHost> admin_host;
  if (admin_apart) {
    dd::ServerOptions admin_options;
    admin_options.listen_address = absl::StrCat(FLAGS_admin_host, ":", FLAGS_admin_port);
    admin_options.security = *security;
    admin_options.port_file = FLAGS_admin_port_file;
    auto started = dd::ServiceHost::Start(admin_options, {&admin_service});
    if (!started.ok()) return started.status();
    admin_host = std::move(*started);
    admin_host->SetServing(true);
    LOG(INFO) << "admin calls on " << FLAGS_admin_host << ":" << admin_host->port()
              << " only";
  }
  // The status page and /metrics on --http_port.
  auto http = dd::metrics::StartHttpServerFromFlags(FLAGS_host, &registry, StatusPages(&core, newest_sample.get()));
  if (!http.ok()) return http.status();
  if (*http != nullptr) {
    LOG(INFO) << "status page: http://" << (FLAGS_host == "0.0.0.0" ? "127.0.0.1" : FLAGS_host)
              << ":" << (*http)->port() << "/";
  }
  (*host)->SetServing(true);

  absl::Notification stop;
  std::thread maintenance([&] {
    bool serving = true;
    while (!stop.WaitForNotificationWithTimeout(absl::Seconds(1))) {
      core.Tick();
      // A ledger that stopped accepting changes cannot run the collaboration:
      // say so on the health service, so a supervisor (compose's restart
      // policy, a kubelet probe) restarts the coordinator, which reopens the
      // ledger from its durable state.
      if (serving && !ledger_ptr->AcceptsChanges()) {
        serving = false;
        LOG(ERROR) << "the ledger stopped accepting changes after a failed write: health is "
                      "NOT_SERVING; restart the coordinator";
        (*host)->SetServing(false);
        if (admin_host != nullptr) admin_host->SetServing(false);
      }
    }
  });
  (*host)->WaitForTerminationSignal(absl::Seconds(FLAGS_shutdown_grace_s));
  if (admin_host != nullptr) admin_host->Shutdown(absl::Seconds(1));
  stop.Notify();
  maintenance.join();
  if (absl::Status s = (*history)->Flush(); !s.ok()) LOG(WARNING) << "history: " << s;
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  return dd::RunMain(
      "coordinator --config=run.json --db_dir=DIR --dataset_address=HOST:PORT [--port=N]", argc,
      argv, [](int, char**) { return Run(); });
}
