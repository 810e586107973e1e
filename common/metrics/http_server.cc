#include "common/metrics/http_server.h"

#include <dirent.h>
#include <unistd.h>

#include <chrono>
#include <fstream>

#include <gflags/gflags.h>
#include <glog/logging.h>
#include <httplib.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/io/file_util.h"
#include "common/rpc/auth.h"
#include "common/rpc/ip_address.h"

DEFINE_int32(http_port, -1,
             "Port of this process's HTTP side (/metrics for Prometheus; the coordinator's "
             "status page): -1 off, 0 any free port (see --http_port_file).");
DEFINE_string(http_port_file, "", "Write the bound HTTP port here once listening.");
DEFINE_string(http_host, "",
              "Address of the HTTP side (default: servers' --host; trainers' 127.0.0.1).");
DEFINE_string(http_viewer_token_file, "",
              "A token HTTP requests must carry (Authorization: Bearer); required when the "
              "process listens on a non-loopback address.");

namespace dd::metrics {

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpServerOptions& options,
                                                               MetricsRegistry* registry) {
  if (options.viewer_token.empty() && !IsLoopbackHost(options.host)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the HTTP side listens on ", options.host,
        ", not a loopback address: give it a viewer token (--http_viewer_token_file)"));
  }
  std::unique_ptr<HttpServer> s(new HttpServer());
  s->server_ = std::make_unique<httplib::Server>();
  s->server_->set_keep_alive_max_count(100);
  s->server_->set_read_timeout(10, 0);
  s->server_->set_write_timeout(10, 0);
  s->server_->set_payload_max_length(64 * 1024);
  // Every request: GET or HEAD only, and the viewer token when one is set.
  const std::string token = options.viewer_token;
  s->server_->set_pre_routing_handler(
      [token](const httplib::Request& req, httplib::Response& res) {
        if (req.method != "GET" && req.method != "HEAD") {
          res.status = 405;
          res.set_content("only GET\n", "text/plain");
          return httplib::Server::HandlerResponse::Handled;
        }
        if (!token.empty()) {
          // A browser opening the status page cannot add a header: it may
          // give the token as ?token= instead (the page passes it on).
          std::string header = req.get_header_value("Authorization");
          absl::string_view presented = header;
          bool ok = absl::ConsumePrefix(&presented, "Bearer ") &&
                    ConstantTimeEquals(presented, token);
          ok = ok ||
               (req.has_param("token") && ConstantTimeEquals(req.get_param_value("token"), token));
          if (!ok) {
            res.status = 401;
            res.set_header("WWW-Authenticate", "Bearer");
            res.set_content("a viewer token is required (Authorization: Bearer)\n",
                            "text/plain");
            return httplib::Server::HandlerResponse::Handled;
          }
        }
        return httplib::Server::HandlerResponse::Unhandled;
      });
  s->server_->Get("/metrics", [registry](const httplib::Request&, httplib::Response& res) {
    res.set_content(registry->Render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  for (const auto& [path, handler] : options.pages) {
    // httplib routes by regular expression: the path is matched literally.
    std::string pattern;
    for (char c : path) {
      if (std::string(".^$|()[]{}*+?\\").find(c) != std::string::npos) pattern += '\\';
      pattern += c;
    }
    s->server_->Get(pattern, [handler](const httplib::Request&, httplib::Response& res) {
      HttpPage page = handler();
      res.status = page.status;
      res.set_content(page.body, page.content_type);
    });
  }
  int port = options.port;
  if (port == 0) {
    port = s->server_->bind_to_any_port(options.host);
    if (port <= 0) {
      return absl::UnavailableError(absl::StrCat("cannot bind HTTP on ", options.host));
    }
  } else if (!s->server_->bind_to_port(options.host, port)) {
    return absl::UnavailableError(absl::StrCat("cannot bind HTTP on ", options.host, ":", port));
  }
  s->port_ = port;
  httplib::Server* raw = s->server_.get();
  s->thread_ = std::thread([raw] { raw->listen_after_bind(); });
  // stop() does nothing until the loop runs: wait for it, so that a server
  // destroyed at once still stops.
  for (int i = 0; i < 5000 && !raw->is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  LOG(INFO) << "HTTP (/metrics) on " << options.host << ":" << port
            << (token.empty() ? " (loopback, open)" : " (viewer token required)");
  return s;
}

HttpServer::~HttpServer() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<std::unique_ptr<HttpServer>> StartHttpServerFromFlags(
    const std::string& host, MetricsRegistry* registry, HttpPages pages) {
  if (FLAGS_http_port < 0) return std::unique_ptr<HttpServer>();
  if (FLAGS_http_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--http_port ", FLAGS_http_port));
  }
  HttpServerOptions options;
  options.host = !FLAGS_http_host.empty() ? FLAGS_http_host : host.empty() ? "127.0.0.1" : host;
  options.port = FLAGS_http_port;
  options.pages = std::move(pages);
  if (!FLAGS_http_viewer_token_file.empty()) {
    auto token = ReadFileToString(FLAGS_http_viewer_token_file);
    if (!token.ok()) return token.status();
    options.viewer_token = std::string(absl::StripAsciiWhitespace(*token));
    if (options.viewer_token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(FLAGS_http_viewer_token_file, " holds no token"));
    }
  }
  auto server = HttpServer::Start(options, registry);
  if (!server.ok()) return server.status();
  if (!FLAGS_http_port_file.empty()) {
    auto written = WriteFileAtomically(FLAGS_http_port_file, absl::StrCat((*server)->port()));
    if (!written.ok()) return written;
  }
  return server;
}

void AddProcessMetrics(MetricsRegistry* registry) {
  const double start = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  registry->AddGaugeFunction("process_start_time_seconds",
                             "Start time of the process since the Unix epoch.", {},
                             [start] { return GaugeSamples{{{}, start}}; });
  registry->AddGaugeFunction(
      "process_resident_memory_bytes", "Resident memory size.", {}, [] {
        std::ifstream statm("/proc/self/statm");
        double pages_total = 0, pages_resident = 0;
        statm >> pages_total >> pages_resident;
        return GaugeSamples{{{}, pages_resident * sysconf(_SC_PAGESIZE)}};
      });
  registry->AddGaugeFunction("process_open_fds", "Open file descriptors.", {}, [] {
    double n = 0;
    if (DIR* d = opendir("/proc/self/fd")) {
      while (readdir(d) != nullptr) ++n;
      closedir(d);
      n -= 3;  // ".", ".." and the directory's own descriptor
    }
    return GaugeSamples{{{}, n}};
  });
}

}  // namespace dd::metrics
