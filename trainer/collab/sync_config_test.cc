#include "trainer/collab/sync_config.h"

#include "gtest/gtest.h"

namespace dd::collab {
namespace {

TEST(SyncConfigTest, DefaultsToGradientAveraging) {
  auto c = ParseSyncConfig(R"({"run_id": "r"})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->mode, SyncMode::kGradients);
  EXPECT_EQ(c->codec, averaging::CodecId::kNone);
  EXPECT_EQ(c->outer.local_steps, 32);
  EXPECT_EQ(MaxLocalSteps(c->outer), 64);  // 2H: fast peers fill in for slow ones
  EXPECT_DOUBLE_EQ(c->outer.lr, 0.7);
  EXPECT_DOUBLE_EQ(c->outer.momentum, 0.9);
  EXPECT_TRUE(c->outer.nesterov);
}

TEST(SyncConfigTest, ReadsOuterSettings) {
  auto c = ParseSyncConfig(R"({"sync": "outer", "local_steps": 4, "outer_lr": 0.5,
      "outer_momentum": 0.8, "outer_nesterov": false, "error_feedback": false,
      "overlap": false, "codec": "blockwise8bit", "max_local_steps": 4})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->mode, SyncMode::kOuter);
  EXPECT_EQ(c->codec, averaging::CodecId::kBlockwise8Bit);
  EXPECT_EQ(c->outer.local_steps, 4);
  EXPECT_EQ(MaxLocalSteps(c->outer), 4);
  EXPECT_DOUBLE_EQ(c->outer.lr, 0.5);
  EXPECT_DOUBLE_EQ(c->outer.momentum, 0.8);
  EXPECT_FALSE(c->outer.nesterov);
  EXPECT_FALSE(c->outer.error_feedback);
  EXPECT_FALSE(c->outer.overlap);
}

TEST(SyncConfigTest, RefusesBadValuesNamingTheKey) {
  for (const char* bad : {R"({"sync": "dilocoo"})", R"({"local_steps": 0})",
                          R"({"local_steps": 2.5})", R"({"outer_lr": 0})",
                          R"({"outer_lr": "fast"})", R"({"outer_momentum": 1.0})",
                          R"({"outer_momentum": -0.1})", R"({"overlap": 1})",
                          R"({"codec": "zip"})", R"([1, 2])",
                          R"({"local_steps": 8, "max_local_steps": 7})"}) {
    auto c = ParseSyncConfig(bad);
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(c.status().message().find("run config"), std::string::npos) << c.status();
  }
}

TEST(SyncConfigTest, TheSparseCodecNeedsOuterStepsWithErrorFeedback) {
  auto ok = ParseSyncConfig(R"({"sync": "outer", "codec": "topk8bit"})");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->codec, averaging::CodecId::kTopK8Bit);
  for (const char* bad : {R"({"codec": "topk8bit"})",
                          R"({"sync": "outer", "codec": "topk8bit", "error_feedback": false})"}) {
    auto c = ParseSyncConfig(bad);
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_NE(c.status().message().find("topk8bit"), std::string::npos) << c.status();
  }
}

}  // namespace
TEST(SyncConfigTest, OpenRunsAverageRobustlyByDefault) {
  auto closed = ParseSyncConfig("{}");
  ASSERT_TRUE(closed.ok());
  EXPECT_EQ(closed->aggregation, averaging::Aggregation::kMean);
  EXPECT_EQ(closed->max_update_norm, 0);
  auto open = ParseSyncConfig(R"({"open_run": true, "clip_tau": 0.5, "max_update_norm": 10})");
  ASSERT_TRUE(open.ok()) << open.status();
  EXPECT_EQ(open->aggregation, averaging::Aggregation::kCenteredClip);
  EXPECT_EQ(open->clip_tau, 0.5);
  EXPECT_EQ(open->max_update_norm, 10);
  auto chosen = ParseSyncConfig(R"({"open_run": true, "aggregation": "mean"})");
  ASSERT_TRUE(chosen.ok());
  EXPECT_EQ(chosen->aggregation, averaging::Aggregation::kMean);
  for (const char* bad : {R"({"aggregation": "median"})", R"({"clip_tau": 0})",
                          R"({"max_update_norm": -1})", R"({"open_run": "yes"})"}) {
    EXPECT_EQ(ParseSyncConfig(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace dd::collab
