#include "services/coordinator/history/run_history.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace dd::coordinator {
namespace {

v1::StepTelemetry T(uint64_t step, double loss, double rate = 10) {
  v1::StepTelemetry t;
  t.set_step(step);
  t.set_loss(loss);
  t.set_learning_rate(1e-4);
  t.set_step_seconds(2);
  t.set_averaging_seconds(0.5);
  t.set_samples_per_second(rate);
  return t;
}

std::string TempPath(const std::string& name) {
  std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/history";
  std::filesystem::create_directories(dir);
  std::string path = dir + "/" + name;
  std::filesystem::remove(path);
  return path;
}

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

TEST(RunHistoryTest, OnePointPerStepOverItsReporters) {
  auto h = RunHistory::Open("");
  ASSERT_TRUE(h.ok());
  ASSERT_TRUE((*h)->Report("a", T(1, 0.4, 10), kT0).ok());
  ASSERT_TRUE((*h)->Report("b", T(1, 0.2, 30), kT0 + absl::Seconds(1)).ok());
  ASSERT_TRUE((*h)->Report("a", T(1, 0.6, 10), kT0 + absl::Seconds(2)).ok());  // replaces a's
  ASSERT_TRUE((*h)->Report("a", T(2, 0.1, 20), kT0 + absl::Seconds(3)).ok());
  auto points = (*h)->Points(0, 100);
  ASSERT_EQ(points.size(), 2u);
  EXPECT_EQ(points[0].step(), 1u);
  EXPECT_EQ(points[0].reporters(), 2u);
  EXPECT_DOUBLE_EQ(points[0].loss(), 0.4);  // (0.6 + 0.2) / 2
  EXPECT_DOUBLE_EQ(points[0].samples_per_second(), 40);
  EXPECT_EQ(points[0].unix_ms(), absl::ToUnixMillis(kT0));
  EXPECT_EQ(points[1].step(), 2u);
  EXPECT_DOUBLE_EQ(points[1].loss(), 0.1);
  EXPECT_EQ((*h)->Points(1, 100).size(), 1u);
  EXPECT_EQ((*h)->Points(0, 1)[0].step(), 2u);  // the newest
}

TEST(RunHistoryTest, RefusesAbsurdNumbers) {
  auto h = RunHistory::Open("");
  ASSERT_TRUE(h.ok());
  for (auto bad : {T(1, std::nan("")), T(1, 1e300), T(0, 0.1), T(1, 0.1, -1), T(1, 0.1, HUGE_VAL)}) {
    EXPECT_EQ((*h)->Report("a", bad, kT0).code(), absl::StatusCode::kInvalidArgument)
        << bad.DebugString();
  }
  v1::StepTelemetry lr = T(1, 0.1);
  lr.set_learning_rate(1e9);
  EXPECT_FALSE((*h)->Report("a", lr, kT0).ok());
  EXPECT_TRUE((*h)->Points(0, 100).empty());
}

TEST(RunHistoryTest, SurvivesARestartAndATornLine) {
  const std::string path = TempPath("restart.jsonl");
  {
    auto h = RunHistory::Open(path);
    ASSERT_TRUE(h.ok()) << h.status();
    for (uint64_t s = 1; s <= 10; ++s) {
      ASSERT_TRUE((*h)->Report("a", T(s, 1.0 / s), kT0 + absl::Seconds(s)).ok());
    }
    // Steps 9 and 10 are still open: a crash now would lose only them.
  }
  {
    std::ofstream(path, std::ios::app) << "{\"step\": 11, \"unix";  // a crash mid-write
    auto h = RunHistory::Open(path);
    ASSERT_TRUE(h.ok()) << h.status();
    auto points = (*h)->Points(0, 100);
    ASSERT_EQ(points.size(), 8u);
    EXPECT_EQ(points.back().step(), 8u);
    EXPECT_DOUBLE_EQ(points.back().loss(), 1.0 / 8);
    // A report for a step already written out is ignored; later ones go on.
    ASSERT_TRUE((*h)->Report("a", T(3, 99), kT0).ok());
    ASSERT_TRUE((*h)->Report("a", T(9, 0.5), kT0).ok());
    ASSERT_TRUE((*h)->Flush().ok());
  }
  auto h = RunHistory::Open(path);
  ASSERT_TRUE(h.ok()) << h.status();
  auto points = (*h)->Points(0, 100);
  ASSERT_EQ(points.size(), 9u);
  EXPECT_DOUBLE_EQ(points[2].loss(), 1.0 / 3);
  EXPECT_EQ(points.back().step(), 9u);
}

TEST(RunHistoryTest, ABrokenLineInTheMiddleIsDataLoss) {
  const std::string path = TempPath("broken.jsonl");
  std::ofstream(path) << "not json\n{\"step\": 1}\n";
  EXPECT_EQ(RunHistory::Open(path).status().code(), absl::StatusCode::kDataLoss);
}

TEST(RunHistoryTest, StaysBoundedInMemoryAndOnDisk) {
  const std::string path = TempPath("bounded.jsonl");
  auto h = RunHistory::Open(path, /*max_points=*/10);
  ASSERT_TRUE(h.ok());
  for (uint64_t s = 1; s <= 100; ++s) ASSERT_TRUE((*h)->Report("a", T(s, 0.1), kT0).ok());
  auto points = (*h)->Points(0, 1000);
  EXPECT_LE(points.size(), 12u);  // 10 written out + the 2 open steps
  EXPECT_EQ(points.back().step(), 100u);
  std::ifstream in(path);
  int lines = 0;
  for (std::string line; std::getline(in, line);) ++lines;
  EXPECT_LE(lines, 20);
}

}  // namespace
}  // namespace dd::coordinator
