// RunLoop and OutputSchedule with a fake run: which steps write checkpoints
// and grids, what is recorded, and how errors and runs without outputs end.
#include "trainer/training/run_loop.h"

#include <vector>

#include "gtest/gtest.h"

namespace dd::training {
namespace {

class FakeRun : public SteppedRun {
 public:
  explicit FakeRun(int64_t start = 0) : step_(start) {}
  int64_t step() const override { return step_; }
  absl::StatusOr<StepReport> TakeStep() override {
    if (step_ + 1 == fail_at) return absl::DataLossError("batch unreadable");
    StepReport r;
    r.step = ++step_;
    r.loss = 1.0 / r.step;
    r.samples = 4;
    r.seconds = 0.5;
    return r;
  }
  absl::Status Record(const StepReport& r, const std::map<std::string, double>& extra) override {
    recorded.push_back(r.step);
    rates.push_back(extra.at("images_per_second"));
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> SaveCheckpoint() override {
    ++checkpoint_calls;
    if (!has_checkpoints) return absl::UnimplementedError("none");
    checkpoints.push_back(step_);
    return "ckpt";
  }
  absl::StatusOr<std::string> WriteSamples() override {
    if (samples_fail) return absl::InternalError("decoder");
    samples.push_back(step_);
    return "grid";
  }
  absl::Status Finish() override {
    finished = true;
    return absl::OkStatus();
  }

  int64_t step_;
  int64_t fail_at = -1;
  bool has_checkpoints = true;
  bool samples_fail = false;
  int checkpoint_calls = 0;
  bool finished = false;
  std::vector<int64_t> recorded, checkpoints, samples;
  std::vector<double> rates;
};

TEST(OutputSchedule, EveryNStepsAndTheLast) {
  OutputSchedule s{3, 0, true};
  EXPECT_TRUE(s.CheckpointDue(3, false));
  EXPECT_FALSE(s.CheckpointDue(4, false));
  EXPECT_TRUE(s.CheckpointDue(7, true));
  EXPECT_FALSE(s.SamplesDue(3, true));  // no grids at all
  OutputSchedule t{0, 2, false};
  EXPECT_FALSE(t.CheckpointDue(7, true));
  EXPECT_TRUE(t.SamplesDue(4, false));
  EXPECT_TRUE(t.SamplesDue(5, true));
  EXPECT_TRUE(t.SamplesAtStart(0));
  EXPECT_FALSE(t.SamplesAtStart(1));
}

TEST(RunLoop, StepsToTheEndWritingWhatIsDue) {
  FakeRun run;
  RunLoopOptions o;
  o.max_steps = 7;
  o.outputs = {3, 2, true};
  ASSERT_TRUE(RunLoop(o, &run).ok());
  EXPECT_EQ(run.recorded, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(run.checkpoints, (std::vector<int64_t>{3, 6, 7}));
  EXPECT_EQ(run.samples, (std::vector<int64_t>{0, 2, 4, 6, 7}));
  EXPECT_DOUBLE_EQ(run.rates.back(), 8.0);  // 4 samples per 0.5 s
  EXPECT_TRUE(run.finished);
}

TEST(RunLoop, AResumedRunGoesOnFromItsStepWithoutAGridOfTheStart) {
  FakeRun run(5);
  RunLoopOptions o;
  o.max_steps = 6;
  o.outputs = {0, 2, true};
  ASSERT_TRUE(RunLoop(o, &run).ok());
  EXPECT_EQ(run.recorded, (std::vector<int64_t>{6}));
  EXPECT_EQ(run.samples, (std::vector<int64_t>{6}));
  EXPECT_EQ(run.checkpoints, (std::vector<int64_t>{6}));
}

TEST(RunLoop, ARunWithoutCheckpointsIsNotAskedAgain) {
  FakeRun run;
  run.has_checkpoints = false;
  RunLoopOptions o;
  o.max_steps = 6;
  o.outputs = {1, 0, true};
  ASSERT_TRUE(RunLoop(o, &run).ok());
  EXPECT_EQ(run.checkpoint_calls, 1);
}

TEST(RunLoop, TheFirstErrorEndsTheRun) {
  FakeRun run;
  run.fail_at = 3;
  RunLoopOptions o;
  o.max_steps = 10;
  EXPECT_EQ(RunLoop(o, &run).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(run.recorded.size(), 2u);
  EXPECT_FALSE(run.finished);

  FakeRun grids;
  grids.samples_fail = true;
  o.outputs = {0, 1, false};
  EXPECT_EQ(RunLoop(o, &grids).code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(grids.recorded.empty());  // the grid before the first step failed
}

}  // namespace
}  // namespace dd::training
