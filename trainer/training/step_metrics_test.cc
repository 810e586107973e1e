#include "trainer/training/step_metrics.h"

#include <gtest/gtest.h>

#include "common/metrics/testing/exposition_parser.h"

namespace dd::training {
namespace {

TEST(StepMetricsTest, RowsBecomeMetricsUnderPrometheusNames) {
  metrics::MetricsRegistry registry;
  auto sink = MakeStepMetricsSink(&registry);
  sink(1, {{"loss", 0.5}, {"lr", 1e-4}, {"step_seconds", 0.3}, {"bytes_sent", 1000},
           {"compute_seconds", 0.2}, {"unlisted_key", 7}});
  sink(2, {{"loss", 0.25}, {"lr", 2e-4}, {"step_seconds", 0.5}, {"bytes_sent", 500},
           {"compute_seconds", 0.4}});
  auto page = metrics::testing::ParseExposition(registry.Render());
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->at("dd_trainer_step").samples.at("dd_trainer_step{}"), 2);
  EXPECT_EQ(page->at("dd_trainer_loss").samples.at("dd_trainer_loss{}"), 0.25);
  EXPECT_EQ(page->at("dd_trainer_learning_rate").samples.at("dd_trainer_learning_rate{}"), 2e-4);
  // Per-step amounts add up; durations become histograms.
  EXPECT_EQ(page->at("dd_trainer_averaging_sent_bytes_total")
                .samples.at("dd_trainer_averaging_sent_bytes_total{}"),
            1500);
  EXPECT_DOUBLE_EQ(page->at("dd_trainer_compute_seconds_total")
                       .samples.at("dd_trainer_compute_seconds_total{}"),
                   0.6);
  EXPECT_EQ(page->at("dd_trainer_step_seconds").samples.at("dd_trainer_step_seconds_count{}"), 2);
  EXPECT_DOUBLE_EQ(page->at("dd_trainer_step_seconds").samples.at("dd_trainer_step_seconds_sum{}"),
                   0.8);
  for (const auto& [name, family] : *page) {
    EXPECT_EQ(name.find("unlisted"), std::string::npos) << name;
  }
}

}  // namespace
}  // namespace dd::training
