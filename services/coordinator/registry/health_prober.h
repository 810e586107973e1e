// HealthProber: asks whether a peer answers a gRPC health check at an
// address. The coordinator lists a peer's address to others only after a
// successful probe, so dead or unreachable addresses are never handed out.
#ifndef SERVICES_COORDINATOR_REGISTRY_HEALTH_PROBER_H_
#define SERVICES_COORDINATOR_REGISTRY_HEALTH_PROBER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "common/rpc/security.h"
#include "common/thread/thread_pool.h"

namespace dd::coordinator {

class HealthProber {
 public:
  virtual ~HealthProber() = default;
  // Probes `address` ("host:port") and calls `done(serving)` exactly once, on
  // any thread, without blocking the caller.
  virtual void Probe(const std::string& address, std::function<void(bool)> done) = 0;
};

// Probes with grpc.health.v1 Check over channels made with `security` (TLS
// settings; health needs no token).
class GrpcHealthProber : public HealthProber {
 public:
  GrpcHealthProber(SecurityConfig security, absl::Duration timeout, int threads = 4);
  void Probe(const std::string& address, std::function<void(bool)> done) override;

 private:
  const SecurityConfig security_;
  const absl::Duration timeout_;
  ThreadPool pool_;
};

}  // namespace dd::coordinator

#endif  // SERVICES_COORDINATOR_REGISTRY_HEALTH_PROBER_H_
