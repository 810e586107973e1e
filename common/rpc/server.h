// ServiceHost: the one way every distributed-diffusion server starts.
//
// It gives each server the same surface: gRPC reflection (grpcurl works
// without .proto files), the standard health service (NOT_SERVING until the
// owner calls SetServing(true), NOT_SERVING again when shutdown begins),
// keepalive and message-size limits from keepalive.h, the credentials and
// token check of security.h, and a graceful shutdown on SIGTERM/SIGINT that
// lets in-flight calls finish within a grace period.
#ifndef COMMON_RPC_SERVER_H_
#define COMMON_RPC_SERVER_H_

#include <grpcpp/server.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/metrics/prometheus.h"
#include "common/rpc/security.h"

namespace dd {

struct ServerOptions {
  // "host:port"; port 0 picks a free port (see ServiceHost::port()).
  std::string listen_address = "0.0.0.0:0";
  SecurityConfig security;
  // When not empty, the bound port is written there (atomically) once the
  // server listens, so scripts and tests that asked for port 0 can find it.
  std::string port_file;
  // When set, every RPC is counted and timed there (common/rpc/rpc_metrics.h;
  // not owned, must outlive the host). One server per registry.
  metrics::MetricsRegistry* metrics = nullptr;
};

class ServiceHost {
 public:
  // Builds and starts a server hosting `services` (not owned; they must
  // outlive the host). Health reports NOT_SERVING for the whole server and for
  // each service until SetServing(true). Errors: InvalidArgument /
  // FailedPrecondition for bad security settings, Unavailable when the
  // address cannot be bound (in use, bad host).
  static absl::StatusOr<std::unique_ptr<ServiceHost>> Start(
      const ServerOptions& options, const std::vector<grpc::Service*>& services);

  ~ServiceHost();  // Shuts down (zero grace) if Shutdown() was not called.

  ServiceHost(const ServiceHost&) = delete;
  ServiceHost& operator=(const ServiceHost&) = delete;

  // The bound TCP port.
  int port() const { return port_; }

  // Sets the health status of the server and of every hosted service.
  void SetServing(bool serving);

  // Reports NOT_SERVING, stops accepting calls, waits up to `grace` for
  // in-flight calls, then cancels the rest. Idempotent.
  void Shutdown(absl::Duration grace);

  // Blocks until SIGTERM or SIGINT arrives (handlers are installed by Start),
  // then calls Shutdown(grace). Returns the signal number.
  int WaitForTerminationSignal(absl::Duration grace);

 private:
  ServiceHost(std::unique_ptr<grpc::Server> server, int port);

  // Fixed after construction.
  const std::unique_ptr<grpc::Server> server_;
  const int port_;
  bool shut_down_ = false;  // Only touched by the owning thread.
};

// Raises the termination signal handled by WaitForTerminationSignal() from
// code (tests, or a fatal condition found on another thread).
void RequestTermination();

}  // namespace dd

#endif  // COMMON_RPC_SERVER_H_
