// Per-RPC metrics of a server, in the names grpc-ecosystem's
// go-grpc-prometheus made common (so existing Grafana dashboards work):
//   grpc_server_started_total{grpc_service,grpc_method,grpc_type}
//   grpc_server_handled_total{grpc_service,grpc_method,grpc_type,grpc_code}
//   grpc_server_handling_seconds{grpc_service,grpc_method,grpc_type} (histogram)
//   grpc_server_msg_received_total / grpc_server_msg_sent_total{...}
// recorded by a server interceptor that ServiceHost installs when
// ServerOptions::metrics is set.
#ifndef COMMON_RPC_RPC_METRICS_H_
#define COMMON_RPC_RPC_METRICS_H_

#include <grpcpp/support/server_interceptor.h>

#include <memory>

#include "common/metrics/prometheus.h"

namespace dd {

// Creates the interceptors; registers its families in `registry` (which must
// outlive every server built with it). One per registry.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeRpcMetricsInterceptor(
    metrics::MetricsRegistry* registry);

}  // namespace dd

#endif  // COMMON_RPC_RPC_METRICS_H_
