#include "common/rpc/server.h"

#include <fcntl.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server_builder.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <mutex>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.pb.h"
#include "common/io/file_util.h"
#include "common/rpc/keepalive.h"
#include "common/rpc/rpc_metrics.h"

namespace dd {
namespace {

// Self-pipe: the signal handler writes the signal number, the waiting thread
// reads it. Writing to a pipe is async-signal-safe.
int g_signal_pipe[2] = {-1, -1};
std::once_flag g_signal_once;

void OnTerminationSignal(int signo) {
  unsigned char byte = static_cast<unsigned char>(signo);
  int saved = errno;
  ssize_t ignored = ::write(g_signal_pipe[1], &byte, 1);
  (void)ignored;
  errno = saved;
}

void InstallSignalHandlers() {
  std::call_once(g_signal_once, [] {
    if (::pipe2(g_signal_pipe, O_CLOEXEC) != 0) {
      PLOG(FATAL) << "pipe2";
    }
    struct sigaction sa = {};
    sa.sa_handler = OnTerminationSignal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
  });
}

}  // namespace

void RequestTermination() {
  InstallSignalHandlers();
  OnTerminationSignal(SIGTERM);
}

absl::StatusOr<std::unique_ptr<ServiceHost>> ServiceHost::Start(
    const ServerOptions& options, const std::vector<grpc::Service*>& services) {
  auto creds = MakeServerCredentials(options.security);
  if (!creds.ok()) return creds.status();

  // Both are process-wide switches read by the builder.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  // The default health service has no descriptor of its own: naming one of
  // health.proto's links it (and registers it), so that reflection can
  // describe grpc.health.v1.Health to clients such as grpcurl.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();

  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen_address, *creds, &port);
  ApplyServerChannelSettings(&builder);
  // Ours is the only server per process: SO_REUSEPORT would let a second
  // process bind the same port silently.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  for (grpc::Service* service : services) builder.RegisterService(service);
  if (options.metrics != nullptr) {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
    creators.push_back(MakeRpcMetricsInterceptor(options.metrics));
    builder.experimental().SetInterceptorCreators(std::move(creators));
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", options.listen_address,
        " (address in use or not local? try another --port)"));
  }
  InstallSignalHandlers();
  auto host = std::unique_ptr<ServiceHost>(
      new ServiceHost(std::move(server), port));
  host->SetServing(false);
  if (!options.port_file.empty()) {
    absl::Status s = WriteFileAtomically(options.port_file, absl::StrCat(port, "\n"));
    if (!s.ok()) return s;
  }
  LOG(INFO) << "listening on " << options.listen_address << " (port " << port
            << (options.security.UsesTls() ? ", TLS" : ", plain text, loopback only")
            << ")";
  return host;
}

ServiceHost::ServiceHost(std::unique_ptr<grpc::Server> server, int port)
    : server_(std::move(server)), port_(port) {}

ServiceHost::~ServiceHost() { Shutdown(absl::ZeroDuration()); }

void ServiceHost::SetServing(bool serving) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health != nullptr) health->SetServingStatus(serving);
}

void ServiceHost::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  SetServing(false);
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
}

int ServiceHost::WaitForTerminationSignal(absl::Duration grace) {
  unsigned char byte = 0;
  while (true) {
    ssize_t n = ::read(g_signal_pipe[0], &byte, 1);
    if (n == 1) break;
    if (n < 0 && errno == EINTR) continue;
    PLOG(FATAL) << "reading the signal pipe";
  }
  LOG(INFO) << "signal " << static_cast<int>(byte) << ": draining calls for up to "
            << absl::FormatDuration(grace);
  Shutdown(grace);
  return byte;
}

}  // namespace dd
