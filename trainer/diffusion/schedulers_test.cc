// Parity of the schedules and samplers with diffusers on
// reference/scheduler_io (+ scheduler_model_outputs).
#include "trainer/diffusion/schedulers.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "trainer/model/testing/fixtures.h"
#include "trainer/model/torch_tensors.h"

namespace dd::diffusion {
namespace {

using model::testing::RelativeError;
using model::testing::TinySd1;

ScheduleConfig Config() {
  std::ifstream in(TinySd1() + "/model/scheduler/scheduler_config.json");
  std::stringstream ss;
  ss << in.rdbuf();
  auto c = ParseScheduleConfig(ss.str(), "scheduler_config.json");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

TEST(Schedulers, MatchDiffusersOnTheFixture) {
  auto io = model::LoadTensors(TinySd1() + "/reference/scheduler_io.safetensors");
  auto outs = model::LoadTensors(TinySd1() + "/reference/scheduler_model_outputs.safetensors");
  ASSERT_TRUE(io.ok() && outs.ok());
  ScheduleConfig c = Config();
  NoiseSchedule schedule(c);
  EXPECT_LT(RelativeError(schedule.alphas_cumprod(), io->at("alphas_cumprod")), 1e-6);
  EXPECT_LT(RelativeError(schedule.AddNoise(io->at("x0"), io->at("noise"), io->at("t")), io->at("noisy")), 1e-5);
  EXPECT_LT(RelativeError(schedule.Velocity(io->at("x0"), io->at("noise"), io->at("t")), io->at("velocity")), 1e-5);

  DdimSampler ddim(c, 10);
  EXPECT_TRUE(at::equal(ddim.timesteps(), io->at("ddim_timesteps")));
  at::Tensor traj = io->at("ddim_trajectory");
  at::Tensor x = traj[0];
  for (int64_t i = 0; i < 10; ++i) {
    x = ddim.Step(outs->at("ddim_model_outputs")[i], ddim.timesteps()[i].item<int64_t>(), x);
    ASSERT_LT(RelativeError(x, traj[i + 1]), 1e-5) << "DDIM step " << i;
  }

  EulerSampler euler(c, 10);
  EXPECT_LT(RelativeError(euler.timesteps(), io->at("euler_timesteps")), 1e-7);
  EXPECT_LT(RelativeError(euler.sigmas(), io->at("euler_sigmas")), 1e-6);
  at::Tensor etraj = io->at("euler_trajectory");
  x = etraj[0];
  for (int64_t i = 0; i < 10; ++i) {
    at::Tensor out = outs->at("euler_noise_part")[i] + 0.01 * euler.ScaleModelInput(x, i);
    x = euler.Step(out, i, x);
    ASSERT_LT(RelativeError(x, etraj[i + 1]), 1e-5) << "Euler step " << i;
  }
}

TEST(Schedulers, UnsupportedSettingsAreNamed) {
  auto bad = ParseScheduleConfig(R"({"prediction_type": "sample"})", "s.json");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("prediction_type"), absl::string_view::npos);
  EXPECT_FALSE(ParseScheduleConfig(R"({"beta_schedule": "squaredcos_cap_v2"})", "s").ok());
  EXPECT_FALSE(ParseScheduleConfig(R"({"thresholding": true})", "s").ok());
}

TEST(Schedulers, ZeroTerminalSnrRescaleEndsAtZero) {
  ScheduleConfig c = Config();
  c.rescale_betas_zero_snr = true;
  NoiseSchedule s(c);
  EXPECT_NEAR(s.alphas_cumprod()[-1].item<double>(), 0.0, 1e-12);
  EXPECT_NEAR(s.alphas_cumprod()[0].item<double>(), NoiseSchedule(Config()).alphas_cumprod()[0].item<double>(), 1e-6);
}

}  // namespace
}  // namespace dd::diffusion
