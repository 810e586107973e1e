#include "common/metrics/http_server.h"

#include <httplib.h>

#include <gtest/gtest.h>

#include "common/metrics/testing/exposition_parser.h"

namespace dd::metrics {
namespace {

TEST(HttpServerTest, ServesMetricsThatParse) {
  MetricsRegistry registry;
  registry.AddCounter("dd_test_events_total", "Events.")->Get()->Increment(4);
  AddProcessMetrics(&registry);
  auto server = HttpServer::Start({}, &registry);
  ASSERT_TRUE(server.ok()) << server.status();
  httplib::Client client("127.0.0.1", (*server)->port());
  auto res = client.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  auto parsed = testing::ParseExposition(res->body);
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << res->body;
  EXPECT_EQ(parsed->at("dd_test_events_total").samples.at("dd_test_events_total{}"), 4);
  EXPECT_GT(parsed->at("process_resident_memory_bytes").samples.at(
                "process_resident_memory_bytes{}"),
            1e6);
  EXPECT_EQ(client.Get("/nothing")->status, 404);
  EXPECT_EQ(client.Post("/metrics", "x", "text/plain")->status, 405);
}

TEST(HttpServerTest, AViewerTokenGuardsEveryPage) {
  MetricsRegistry registry;
  HttpServerOptions options;
  options.viewer_token = "s3cret";
  options.pages["/"] = [] { return HttpPage{200, "text/html", "<p>status</p>"}; };
  auto server = HttpServer::Start(options, &registry);
  ASSERT_TRUE(server.ok()) << server.status();
  httplib::Client client("127.0.0.1", (*server)->port());
  EXPECT_EQ(client.Get("/metrics")->status, 401);
  EXPECT_EQ(client.Get("/", {{"Authorization", "Bearer wrong!"}})->status, 401);
  EXPECT_EQ(client.Get("/?token=wrong")->status, 401);
  EXPECT_EQ(client.Get("/?token=s3cret")->status, 200);  // a browser's way
  auto ok = client.Get("/", {{"Authorization", "Bearer s3cret"}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(ok->body, "<p>status</p>");
}

TEST(HttpServerTest, RefusesAnOpenNonLoopbackAddress) {
  MetricsRegistry registry;
  HttpServerOptions options;
  options.host = "0.0.0.0";
  auto server = HttpServer::Start(options, &registry);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  options.viewer_token = "t";
  EXPECT_TRUE(HttpServer::Start(options, &registry).ok());
}

}  // namespace
}  // namespace dd::metrics
