#include "trainer/diffusion/schedulers.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace dd::diffusion {
namespace {

at::TensorOptions F32() { return at::TensorOptions().dtype(at::kFloat); }

// Betas as diffusers computes them (float32), with the optional zero
// terminal SNR rescale.
at::Tensor AlphasCumprod(const ScheduleConfig& c) {
  at::Tensor betas;
  if (c.beta_schedule == "scaled_linear") {
    betas = at::linspace(std::sqrt(c.beta_start), std::sqrt(c.beta_end), c.num_train_timesteps, F32())
                .pow(2);
  } else {
    betas = at::linspace(c.beta_start, c.beta_end, c.num_train_timesteps, F32());
  }
  if (c.rescale_betas_zero_snr) {
    at::Tensor abar_sqrt = at::cumprod(1.0 - betas, 0).sqrt();
    at::Tensor first = abar_sqrt[0].clone(), last = abar_sqrt[-1].clone();
    abar_sqrt = (abar_sqrt - last) * first / (first - last);
    at::Tensor abar = abar_sqrt.pow(2);
    at::Tensor alphas = at::cat({abar.slice(0, 0, 1), abar.slice(0, 1) / abar.slice(0, 0, -1)});
    betas = 1.0 - alphas;
  }
  return at::cumprod(1.0 - betas, 0);
}

// table[t] shaped to broadcast over `dims` dimensions; `table` is on t's
// device.
at::Tensor Gather(const at::Tensor& table, const at::Tensor& t, int64_t dims) {
  at::Tensor v = table.index_select(0, t.to(at::kLong));
  std::vector<int64_t> shape = {v.size(0)};
  for (int64_t i = 1; i < dims; ++i) shape.push_back(1);
  return v.view(shape);
}

}  // namespace

absl::StatusOr<ScheduleConfig> ParseScheduleConfig(const std::string& text,
                                                   const std::string& source) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, " is not a JSON object"));
  }
  auto unsupported = [&](const char* key) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", key, " = ", j[key].dump(), " is not supported"));
  };
  ScheduleConfig c;
  try {
    c.num_train_timesteps = j.value("num_train_timesteps", c.num_train_timesteps);
    c.beta_schedule = j.value("beta_schedule", c.beta_schedule);
    c.beta_start = j.value("beta_start", c.beta_start);
    c.beta_end = j.value("beta_end", c.beta_end);
    c.prediction_type = j.value("prediction_type", c.prediction_type);
    c.rescale_betas_zero_snr = j.value("rescale_betas_zero_snr", false);
    c.timestep_spacing = j.value("timestep_spacing", c.timestep_spacing);
    c.steps_offset = j.value("steps_offset", int64_t{0});
    c.set_alpha_to_one = j.value("set_alpha_to_one", true);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", e.what()));
  }
  if (c.beta_schedule != "scaled_linear" && c.beta_schedule != "linear") return unsupported("beta_schedule");
  if (c.prediction_type != "epsilon" && c.prediction_type != "v_prediction") return unsupported("prediction_type");
  if (c.timestep_spacing != "leading" && c.timestep_spacing != "trailing" &&
      c.timestep_spacing != "linspace") {
    return unsupported("timestep_spacing");
  }
  if (j.contains("trained_betas") && !j["trained_betas"].is_null()) return unsupported("trained_betas");
  if (j.value("thresholding", false)) return unsupported("thresholding");
  if (j.value("clip_sample", false)) return unsupported("clip_sample");
  if (c.num_train_timesteps < 2) return unsupported("num_train_timesteps");
  return c;
}

NoiseSchedule::NoiseSchedule(const ScheduleConfig& config)
    : config_(config), alphas_cumprod_(AlphasCumprod(config)) {}

at::Tensor NoiseSchedule::AddNoise(const at::Tensor& x0, const at::Tensor& noise,
                                   const at::Tensor& t) const {
  at::Tensor a = Gather(TableOn(t.device()), t, x0.dim());
  return a.sqrt() * x0 + (1.0 - a).sqrt() * noise;
}

at::Tensor NoiseSchedule::Velocity(const at::Tensor& x0, const at::Tensor& noise,
                                   const at::Tensor& t) const {
  at::Tensor a = Gather(TableOn(t.device()), t, x0.dim());
  return a.sqrt() * noise - (1.0 - a).sqrt() * x0;
}

at::Tensor NoiseSchedule::AlphaBar(const at::Tensor& t) const {
  return TableOn(t.device()).index_select(0, t.to(at::kLong));
}

at::Tensor NoiseSchedule::TableOn(const at::Device& device) const {
  if (device.is_cpu()) return alphas_cumprod_;
  std::lock_guard<std::mutex> lock(device_tables_->mu);
  at::Tensor& table = device_tables_->by_device[device.str()];
  if (!table.defined()) table = alphas_cumprod_.to(device);
  return table;
}

namespace {

// diffusers' set_timesteps for the three spacings (float, descending).
at::Tensor SpacedTimesteps(const ScheduleConfig& c, int64_t steps) {
  const int64_t T = c.num_train_timesteps;
  std::vector<double> ts;
  if (c.timestep_spacing == "linspace") {
    for (int64_t i = 0; i < steps; ++i) ts.push_back(std::round((T - 1) * double(i) / (steps - 1 > 0 ? steps - 1 : 1)));
    std::reverse(ts.begin(), ts.end());
  } else if (c.timestep_spacing == "leading") {
    int64_t ratio = T / steps;
    for (int64_t i = steps - 1; i >= 0; --i) ts.push_back(double(i * ratio + c.steps_offset));
  } else {  // trailing
    double ratio = double(T) / steps;
    for (double x = T; x > 0; x -= ratio) ts.push_back(std::round(x) - 1);
    ts.resize(steps);
  }
  return at::tensor(ts, at::TensorOptions().dtype(at::kDouble));
}

}  // namespace

DdimSampler::DdimSampler(const ScheduleConfig& config, int64_t steps)
    : schedule_(config), steps_(steps), timesteps_(SpacedTimesteps(config, steps).to(at::kLong)) {}

at::Tensor DdimSampler::Step(const at::Tensor& model_output, int64_t t,
                             const at::Tensor& sample) const {
  const ScheduleConfig& c = schedule_.config();
  const at::Tensor& ac = schedule_.alphas_cumprod();
  int64_t prev = t - c.num_train_timesteps / steps_;
  at::Tensor a_t = ac[t];
  at::Tensor a_prev = prev >= 0 ? ac[prev] : (c.set_alpha_to_one ? at::ones({}, F32()) : ac[0]);
  at::Tensor b_t = 1 - a_t;
  at::Tensor x0, eps;
  if (c.prediction_type == "epsilon") {
    x0 = (sample - b_t.sqrt() * model_output) / a_t.sqrt();
    eps = model_output;
  } else {  // v_prediction
    x0 = a_t.sqrt() * sample - b_t.sqrt() * model_output;
    eps = a_t.sqrt() * model_output + b_t.sqrt() * sample;
  }
  return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps;
}

EulerSampler::EulerSampler(const ScheduleConfig& config, int64_t steps) : config_(config) {
  at::Tensor ac = AlphasCumprod(config).to(at::kDouble);
  if (config.rescale_betas_zero_snr) ac[-1] = std::pow(2.0, -24);
  at::Tensor all = ((1 - ac) / ac).sqrt();
  at::Tensor ts = SpacedTimesteps(config, steps);
  // np.interp of the sigma table at the (possibly fractional) timesteps.
  at::Tensor lo = ts.floor().clamp(0, all.size(0) - 1).to(at::kLong);
  at::Tensor hi = (lo + 1).clamp_max(all.size(0) - 1);
  at::Tensor w = ts - lo.to(at::kDouble);
  at::Tensor s = all.index_select(0, lo) * (1 - w) + all.index_select(0, hi) * w;
  sigmas_ = at::cat({s, at::zeros({1}, s.options())}).to(at::kFloat);
  timesteps_ = ts.to(at::kFloat);
}

double EulerSampler::init_noise_sigma() const {
  double m = sigmas_.max().item<double>();
  if (config_.timestep_spacing == "linspace" || config_.timestep_spacing == "trailing") return m;
  return std::sqrt(m * m + 1);
}

at::Tensor EulerSampler::ScaleModelInput(const at::Tensor& sample, int64_t i) const {
  at::Tensor sigma = sigmas_[i];
  return sample / (sigma.pow(2) + 1).sqrt();
}

at::Tensor EulerSampler::Step(const at::Tensor& model_output, int64_t i,
                              const at::Tensor& sample) const {
  at::Tensor sigma = sigmas_[i], next = sigmas_[i + 1];
  at::Tensor x0;
  if (config_.prediction_type == "epsilon") {
    x0 = sample - sigma * model_output;
  } else {
    x0 = model_output * (-sigma / (sigma.pow(2) + 1).sqrt()) + sample / (sigma.pow(2) + 1);
  }
  at::Tensor derivative = (sample - x0) / sigma;
  return sample + derivative * (next - sigma);
}

}  // namespace dd::diffusion
