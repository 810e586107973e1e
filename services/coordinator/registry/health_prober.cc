#include "services/coordinator/registry/health_prober.h"

#include "common/rpc/channel.h"
#include "common/rpc/health_client.h"

namespace dd::coordinator {

GrpcHealthProber::GrpcHealthProber(SecurityConfig security, absl::Duration timeout, int threads)
    : security_(std::move(security)), timeout_(timeout), pool_(threads) {}

void GrpcHealthProber::Probe(const std::string& address, std::function<void(bool)> done) {
  pool_.Schedule([this, address, done = std::move(done)] {
    auto channel = MakeChannel(address, security_);
    if (!channel.ok()) {
      done(false);
      return;
    }
    auto serving = CheckHealth(*channel, "", timeout_);
    done(serving.ok() && *serving);
  });
}

}  // namespace dd::coordinator
