// A process's HTTP side, on its own --http_port (off by default): GET /metrics
// in Prometheus' text format, and pages other components add (the
// coordinator's status page). Read-only. Bound to a loopback address it is
// open; bound elsewhere it needs a viewer token (--http_viewer_token_file)
// in `Authorization: Bearer`, which Prometheus sends with its scrape
// config's `authorization` (docs/operations.md), and it refuses to start
// without one.
#ifndef COMMON_METRICS_HTTP_SERVER_H_
#define COMMON_METRICS_HTTP_SERVER_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/metrics/prometheus.h"

namespace httplib {
class Server;
}

namespace dd::metrics {

// What a page handler returns.
struct HttpPage {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// Pages besides /metrics, by exact path; each handler runs on a server thread
// and must not block for long.
using HttpPages = std::map<std::string, std::function<HttpPage()>>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;              // 0: any free port
  std::string viewer_token;  // required on every request when set
  HttpPages pages;
};

class HttpServer {
 public:
  // Starts serving `registry` at /metrics (which must outlive the server).
  // INVALID_ARGUMENT for a non-loopback host without a viewer token or a bad
  // host; UNAVAILABLE when the port cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpServerOptions& options,
                                                           MetricsRegistry* registry);
  ~HttpServer();  // stops serving and joins the thread

  int port() const { return port_; }

 private:
  HttpServer() = default;

  // Fixed after construction.
  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
  std::thread thread_;
};

// --http_port (-1: off, the default; 0: any free port), --http_port_file,
// --http_viewer_token_file and --http_host (flags defined in
// http_server.cc); `host` is the address when --http_host is not given (a
// server's gRPC --host). Returns null when --http_port is -1.
absl::StatusOr<std::unique_ptr<HttpServer>> StartHttpServerFromFlags(
    const std::string& host, MetricsRegistry* registry, HttpPages pages = {});

// Adds process_resident_memory_bytes, process_start_time_seconds and
// process_open_fds (read from /proc at each scrape).
void AddProcessMetrics(MetricsRegistry* registry);

}  // namespace dd::metrics

#endif  // COMMON_METRICS_HTTP_SERVER_H_
