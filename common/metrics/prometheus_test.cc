#include "common/metrics/prometheus.h"

#include <cmath>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/metrics/testing/exposition_parser.h"

namespace dd::metrics {
namespace {

using testing::ParseExposition;

TEST(PrometheusTest, RendersWhatItCountsAndParsesBack) {
  MetricsRegistry r;
  auto* calls = r.AddCounter("dd_calls_total", "Calls handled.", {"method", "code"});
  calls->WithLabels({"Join", "OK"})->Increment();
  calls->WithLabels({"Join", "OK"})->Increment(2);
  calls->WithLabels({"Leave", "NOT_FOUND"})->Increment();
  calls->WithLabels({"Join", "OK"})->Increment(-5);  // ignored: counters only go up
  auto* live = r.AddGauge("dd_peers", "Live peers.");
  live->Get()->Set(3);
  live->Get()->Add(-1);
  auto* latency = r.AddHistogram("dd_call_seconds", "Call latency.", {0.1, 1, 10}, {"method"});
  for (double v : {0.05, 0.1, 0.5, 5.0, 50.0, HUGE_VAL}) latency->WithLabels({"Join"})->Observe(v);
  latency->WithLabels({"Join"})->Observe(std::nan(""));  // ignored
  r.AddGaugeFunction("dd_chunks", "Chunks by state.", {"state"}, [] {
    return GaugeSamples{{{"pending"}, 7}, {{"leased"}, 2}};
  });

  std::string text = r.Render();
  auto parsed = ParseExposition(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << text;
  const auto& f = *parsed;
  EXPECT_EQ(f.at("dd_calls_total").type, "counter");
  EXPECT_EQ(f.at("dd_calls_total").help, "Calls handled.");
  EXPECT_EQ(f.at("dd_calls_total").samples.at("dd_calls_total{code=\"OK\",method=\"Join\"}"), 3);
  EXPECT_EQ(f.at("dd_calls_total").samples.at("dd_calls_total{code=\"NOT_FOUND\",method=\"Leave\"}"),
            1);
  EXPECT_EQ(f.at("dd_peers").samples.at("dd_peers{}"), 2);
  const auto& h = f.at("dd_call_seconds").samples;
  EXPECT_EQ(h.at("dd_call_seconds_bucket{le=\"0.10000000000000001\",method=\"Join\"}"), 2);
  EXPECT_EQ(h.at("dd_call_seconds_bucket{le=\"1\",method=\"Join\"}"), 3);
  EXPECT_EQ(h.at("dd_call_seconds_bucket{le=\"10\",method=\"Join\"}"), 4);
  EXPECT_EQ(h.at("dd_call_seconds_bucket{le=\"+Inf\",method=\"Join\"}"), 6);
  EXPECT_EQ(h.at("dd_call_seconds_count{method=\"Join\"}"), 6);
  EXPECT_TRUE(std::isinf(h.at("dd_call_seconds_sum{method=\"Join\"}")));
  EXPECT_EQ(f.at("dd_chunks").samples.at("dd_chunks{state=\"pending\"}"), 7);
  EXPECT_EQ(f.at("dd_chunks").samples.at("dd_chunks{state=\"leased\"}"), 2);
}

TEST(PrometheusTest, LabelValuesAreEscapedAndComeBackUnchanged) {
  MetricsRegistry r;
  auto* g = r.AddGauge("dd_named", "Odd names.", {"name"});
  const std::string odd = "a \"quoted\" back\\slash\nnew line";
  g->WithLabels({odd})->Set(1);
  auto parsed = ParseExposition(r.Render());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->at("dd_named").samples.count(absl::StrCat("dd_named{name=\"", odd, "\"}")), 1);
}

TEST(PrometheusTest, LabelSetsAreBounded) {
  MetricsRegistry r;
  auto* c = r.AddCounter("dd_by_peer_total", "Per peer.", {"peer"});
  for (size_t i = 0; i < kMaxSeriesPerFamily + 50; ++i) {
    c->WithLabels({absl::StrCat("peer-", i)})->Increment();
  }
  c->WithLabels({"too", "many"})->Increment();  // wrong arity: "other" as well
  auto parsed = ParseExposition(r.Render());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const auto& samples = parsed->at("dd_by_peer_total").samples;
  EXPECT_EQ(samples.size(), kMaxSeriesPerFamily + 1);
  EXPECT_EQ(samples.at("dd_by_peer_total{peer=\"other\"}"), 51);
}

TEST(PrometheusTest, ConcurrentIncrementsAllCount) {
  MetricsRegistry r;
  auto* c = r.AddCounter("dd_hits_total", "Hits.", {"t"});
  auto* h = r.AddHistogram("dd_sizes_bytes", "Sizes.", ExponentialBuckets(1, 4, 8));
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10000; ++i) {
        c->WithLabels({t % 2 ? "odd" : "even"})->Increment();
        h->Get()->Observe(i % 100);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c->WithLabels({"odd"})->Value() + c->WithLabels({"even"})->Value(), 80000);
  Histogram::Snapshot s = h->Get()->Read();
  EXPECT_EQ(s.count, 80000u);
  EXPECT_DOUBLE_EQ(s.sum, 8 * 100 * (99 * 100 / 2.0));
}

TEST(PrometheusTest, ValuesAreSpelledAsTheFormatWants) {
  EXPECT_EQ(FormatValue(HUGE_VAL), "+Inf");
  EXPECT_EQ(FormatValue(-HUGE_VAL), "-Inf");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
  EXPECT_EQ(FormatValue(42), "42");
  EXPECT_EQ(FormatValue(0.25), "0.25");
}

// The parser the tests rely on refuses what Prometheus refuses.
TEST(ExpositionParserTest, RefusesBrokenText) {
  const char* kBroken[] = {
      "# TYPE a_total counter\na_total 1",                          // no final newline
      "# TYPE calls counter\ncalls 1\n",                            // counter without _total
      "# TYPE a gauge\na{x=\"\\q\"} 1\n",                           // bad escape
      "# TYPE a gauge\nb 1\n",                                      // sample outside its family
      "# TYPE a gauge\n# TYPE a gauge\na 1\n",                      // TYPE twice
      "# TYPE a gauge\na 1\na 2\n",                                 // series twice
      "# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n",                     // label twice
      "# TYPE a gauge\na one\n",                                    // value does not parse
      "# TYPE a gauge\na{x=1} 1\n",                                 // unquoted label value
      "# TYPE 1a gauge\n",                                          // bad name
      "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
      "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",  // no +Inf bucket
      "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
      "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# HELP a late\n",  // family reopened
  };
  for (const char* text : kBroken) {
    EXPECT_FALSE(ParseExposition(text).ok()) << text;
  }
  EXPECT_TRUE(ParseExposition("# HELP a A.\n# TYPE a gauge\na{x=\"1\"} 1.5 1700000000\n").ok());
}

}  // namespace
}  // namespace dd::metrics
