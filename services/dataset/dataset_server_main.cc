// dataset_server: serves a folder of image + caption pairs and/or WebDataset
// shards as verified, resumable chunks (distdiff.dataset.v1.Dataset).
//
//   dataset_server --dataset_dir=/data/pairs --work_dir=/var/lib/dd/dataset \
//       --port=50051 --auth_token_file=/run/secrets/dd_token
#include <iostream>

#include <thread>

#include <gflags/gflags.h>
#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/synchronization/notification.h"
#include "common/crypto/peer_credential.h"
#include "common/init/init.h"
#include "common/metrics/http_server.h"
#include "common/metrics/prometheus.h"
#include "common/rpc/auth.h"
#include "common/rpc/security.h"
#include "common/rpc/server.h"
#include "services/dataset/catalog.h"
#include "services/dataset/dataset_service.h"
#include "services/dataset/indexer.h"

DEFINE_string(dataset_dir, "", "Folder of image + caption pairs and/or WebDataset .tar shards.");
DEFINE_string(work_dir, "", "Folder for the manifest (reused across restarts). Required.");
DEFINE_string(host, "0.0.0.0", "Address to listen on.");
DEFINE_int32(port, 50051, "Port to listen on; 0 picks a free one (see --port_file).");
DEFINE_string(port_file, "", "Write the bound port here once listening.");
DEFINE_string(name, "Dataset Server", "Name reported by GetInfo.");
DEFINE_string(description, "", "Description reported by GetInfo.");
DEFINE_uint32(chunk_size, 256, "Samples per chunk for loose files.");
DEFINE_int32(io_threads, 4, "Threads reading chunk bytes from disk.");
DEFINE_int32(max_concurrent_reads, 64, "ReadChunk streams served at once.");
DEFINE_int32(max_reads_per_client, 16,
             "ReadChunk streams one client (a peer's credential, else an IP address) may hold.");
DEFINE_int32(frame_kib, 1024, "Data per ReadChunk frame in KiB (1..1024).");
DEFINE_int32(read_idle_timeout_s, 60,
             "A ReadChunk stream whose client takes no frame for this long is cancelled.");
DEFINE_string(peer_public_key_file, "",
              "The coordinator's credential public key (its --credential_public_key_out): "
              "peers may then read with their peer credential, which an open run's volunteers "
              "need (they hold an invitation, not the run token). Read when it appears, so "
              "the dataset service can start before the coordinator.");
DEFINE_int32(shutdown_grace_s, 30, "Seconds in-flight calls get to finish on SIGTERM.");

namespace {

using dd::metrics::GaugeSamples;

// dd_dataset_* families: the catalog's size and the ReadChunk streams.
void AddDatasetMetrics(const dd::dataset::DatasetService* service,
                       const dd::dataset::DatasetCatalog* catalog,
                       dd::metrics::MetricsRegistry* registry) {
  registry->AddGaugeFunction("dd_dataset_chunks", "Chunks the manifest lists.", {}, [catalog] {
    return GaugeSamples{{{}, static_cast<double>(catalog->manifest().chunks_size())}};
  });
  registry->AddGaugeFunction("dd_dataset_read_streams", "ReadChunk streams open now.", {},
                             [service] {
                               return GaugeSamples{{{}, double(service->active_reads())}};
                             });
  registry->AddCounterFunction(
      "dd_dataset_read_streams_total", "ReadChunk streams accepted, by how they started.",
      {"start"}, [service] {
        auto s = service->read_stats();
        return GaugeSamples{{{"from_start"}, double(s.streams - s.resumed)},
                            {{"resumed"}, double(s.resumed)}};
      });
  registry->AddCounterFunction(
      "dd_dataset_read_streams_refused_total",
      "ReadChunk streams refused because the service's or the client's slots were full.", {},
      [service] { return GaugeSamples{{{}, double(service->read_stats().refused_busy)}}; });
  registry->AddCounterFunction(
      "dd_dataset_read_streams_idle_cancelled_total",
      "ReadChunk streams cancelled because their client took no frame for --read_idle_timeout_s.", {},
      [service] { return GaugeSamples{{{}, double(service->read_stats().idle_cancelled)}}; });
  registry->AddCounterFunction(
      "dd_dataset_served_bytes_total", "Chunk data bytes sent.", {},
      [service] { return GaugeSamples{{{}, double(service->read_stats().bytes_served)}}; });
}

absl::Status Run() {
  if (FLAGS_work_dir.empty()) return absl::InvalidArgumentError("--work_dir is required");
  auto security = dd::SecurityConfigFromFlags();
  if (!security.ok()) return security.status();
  int64_t start_ms = absl::ToUnixMillis(absl::Now());

  dd::dataset::IndexOptions index_options;
  index_options.dataset_dir = FLAGS_dataset_dir;
  index_options.work_dir = FLAGS_work_dir;
  index_options.chunk_size = FLAGS_chunk_size;
  auto index = dd::dataset::LoadOrBuildManifest(index_options);
  if (!index.ok()) return index.status();
  const auto& m = index->manifest;
  LOG(INFO) << (index->reused ? "reusing manifest: " : "indexed: ") << m.num_samples()
            << " samples in " << m.chunks_size() << " chunks, " << m.skipped_size()
            << " files skipped";
  for (int i = 0; i < m.skipped_size() && i < 20; ++i) {
    LOG(WARNING) << "skipped " << m.skipped(i).path() << ": " << m.skipped(i).reason();
  }
  if (m.num_samples() == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no samples in ", FLAGS_dataset_dir, " (", m.skipped_size(),
        " files skipped): expected name.jpg|jpeg|png|webp beside name.txt, or .tar shards"));
  }
  dd::dataset::DatasetCatalog catalog(std::move(index->manifest),
                                      {FLAGS_name, FLAGS_description}, start_ms);
  if (FLAGS_frame_kib < 1 || FLAGS_frame_kib > 1024) {
    return absl::InvalidArgumentError("--frame_kib must be in 1..1024");
  }
  if (FLAGS_read_idle_timeout_s < 1) return absl::InvalidArgumentError("--read_idle_timeout_s must be >= 1");
  dd::dataset::DatasetService service(
      &catalog, {FLAGS_io_threads, FLAGS_max_concurrent_reads,
                 static_cast<size_t>(FLAGS_frame_kib) << 10, FLAGS_max_reads_per_client,
                 absl::Seconds(FLAGS_read_idle_timeout_s)});
  // Prometheus metrics on --http_port: every RPC, and the chunk streams.
  dd::metrics::MetricsRegistry registry;
  dd::metrics::AddProcessMetrics(&registry);
  AddDatasetMetrics(&service, &catalog, &registry);
  dd::ServerOptions options;
  options.listen_address = absl::StrCat(FLAGS_host, ":", FLAGS_port);
  options.security = *security;
  options.port_file = FLAGS_port_file;
  options.metrics = &registry;
  absl::Notification stop;
  std::thread key_loader;
  if (!FLAGS_peer_public_key_file.empty()) {
    auto slot = std::make_shared<dd::PeerVerifierSlot>();
    options.security.peer_verifier = slot;
    // The coordinator writes the key once it runs, and it needs this
    // service first: wait for the file without holding up the start.
    key_loader = std::thread([slot, &stop] {
      bool told = false;
      do {
        auto verifier = dd::CredentialVerifier::FromPublicKeyFile(FLAGS_peer_public_key_file);
        if (verifier.ok()) {
          slot->Set(*verifier);
          LOG(INFO) << "peer credentials accepted (key from " << FLAGS_peer_public_key_file << ")";
          return;
        }
        if (!told && verifier.status().code() != absl::StatusCode::kNotFound) {
          LOG(WARNING) << "peer public key: " << verifier.status();
          told = true;
        }
      } while (!stop.WaitForNotificationWithTimeout(absl::Milliseconds(200)));
    });
  }
  auto host = dd::ServiceHost::Start(options, {&service});
  if (!host.ok()) {
    stop.Notify();
    if (key_loader.joinable()) key_loader.join();
    return host.status();
  }
  auto http = dd::metrics::StartHttpServerFromFlags(FLAGS_host, &registry);
  if (!http.ok()) {
    stop.Notify();
    if (key_loader.joinable()) key_loader.join();
    return http.status();
  }
  (*host)->SetServing(true);
  (*host)->WaitForTerminationSignal(absl::Seconds(FLAGS_shutdown_grace_s));
  stop.Notify();
  if (key_loader.joinable()) key_loader.join();
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  return dd::RunMain("dataset_server --dataset_dir=DIR --work_dir=DIR [--port=N]", argc, argv,
                     [](int, char**) { return Run(); });
}
