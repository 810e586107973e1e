// rpc_probe: checks a distributed-diffusion server from the command line.
//
//   rpc_probe --target=host:port health [--service=NAME]
//       exit 0 when SERVING; 1 otherwise. No token needed (for container
//       health checks and Kubernetes exec probes).
//   rpc_probe --target=host:port list
//       prints the services the server lists through reflection (needs the
//       token like every other call).
#include <grpcpp/grpcpp.h>

#include <iostream>

#include <gflags/gflags.h>
#include <glog/logging.h>

#include "common/init/init.h"
#include "common/rpc/channel.h"
#include "common/rpc/health_client.h"
#include "common/rpc/reflection_client.h"
#include "common/rpc/security.h"

DECLARE_string(tls_ca);
DECLARE_string(tls_cert);
DECLARE_string(tls_key);

DEFINE_string(target, "127.0.0.1:50051", "Server address host:port.");
DEFINE_string(service, "", "Health: the service to ask about (empty = server).");
DEFINE_int32(timeout_s, 5, "Deadline of the probe.");

int main(int argc, char** argv) {
  dd::InitProcess("rpc_probe --target=HOST:PORT health|list", &argc, &argv);
  if (argc != 2) {
    std::cerr << "usage: rpc_probe --target=HOST:PORT health|list\n";
    return 2;
  }
  std::string command = argv[1];
  auto security = dd::SecurityConfigFromFlags();
  dd::SecurityConfig config;
  if (security.ok()) {
    config = *security;
  } else if (command != "health") {
    std::cerr << security.status() << "\n";
    return 2;
  } else {
    // Health needs no token; keep any TLS settings.
    config.tls_ca_file = FLAGS_tls_ca;
    config.tls_cert_file = FLAGS_tls_cert;
    config.tls_key_file = FLAGS_tls_key;
  }
  auto channel = dd::MakeChannel(FLAGS_target, config);
  if (!channel.ok()) {
    std::cerr << channel.status() << "\n";
    return 2;
  }
  if (command == "health") {
    auto serving = dd::CheckHealth(*channel, FLAGS_service, absl::Seconds(FLAGS_timeout_s));
    if (!serving.ok()) {
      std::cerr << serving.status() << "\n";
      return 1;
    }
    std::cout << (*serving ? "SERVING" : "NOT_SERVING") << "\n";
    return *serving ? 0 : 1;
  }
  if (command == "list") {
    auto names = dd::ListServicesByReflection(*channel, absl::Seconds(FLAGS_timeout_s));
    if (!names.ok()) {
      std::cerr << names.status() << "\n";
      return 1;
    }
    for (const auto& name : *names) std::cout << name << "\n";
    return 0;
  }
  std::cerr << "unknown command " << command << "\n";
  return 2;
}
