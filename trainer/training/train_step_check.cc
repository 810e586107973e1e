#include "trainer/training/train_step_check.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/io/file_util.h"
#include "common/status/status_macros.h"
#include "trainer/diffusion/schedulers.h"
#include "trainer/model/torch_tensors.h"
#include "trainer/model/unet.h"
#include "trainer/training/diffusion_loss.h"
#include "trainer/training/gradients.h"
#include "trainer/training/optimizer.h"

namespace dd::training {

absl::StatusOr<TrainStepComparison> CompareTrainStep(const std::string& unet_dir,
                                                     const std::string& reference_dir) {
  ASSIGN_OR_RETURN(auto ref, model::LoadTensors(reference_dir + "/train_step_io.safetensors"));
  ASSIGN_OR_RETURN(std::string args_text, ReadFileToString(reference_dir + "/train_step_args.json"));
  ASSIGN_OR_RETURN(std::string names_text,
                   ReadFileToString(reference_dir + "/train_step_param_names.json"));
  auto args = nlohmann::json::parse(args_text, nullptr, false);
  auto names_json = nlohmann::json::parse(names_text, nullptr, false);
  if (args.is_discarded() || !names_json.is_array()) {
    return absl::InvalidArgumentError("train_step_args.json or train_step_param_names.json is malformed");
  }
  for (const char* key : {"latents", "noise", "timesteps", "encoder_hidden_states", "losses",
                          "grad_norms", "after_step2_norms"}) {
    if (!ref.count(key)) return absl::InvalidArgumentError(absl::StrCat("train_step_io lacks ", key));
  }
  std::vector<std::string> names = names_json.get<std::vector<std::string>>();
  ASSIGN_OR_RETURN(auto unet, model::UNet::Load(unet_dir));
  // The recipe's own schedule, whatever the model folder says.
  diffusion::ScheduleConfig sc;
  const auto& ns = args.value("noise_schedule", nlohmann::json::object());
  sc.num_train_timesteps = ns.value("num_train_timesteps", int64_t{1000});
  sc.beta_schedule = ns.value("beta_schedule", std::string("scaled_linear"));
  sc.beta_start = ns.value("beta_start", 0.00085);
  sc.beta_end = ns.value("beta_end", 0.012);
  sc.rescale_betas_zero_snr = ns.value("rescale_betas_zero_snr", false);
  sc.prediction_type = args.value("prediction_type", std::string("epsilon"));
  diffusion::NoiseSchedule schedule(sc);
  const double lr = args.value("lr", 1e-3);
  AdamWOptions ao;
  if (args.contains("betas") && args["betas"].size() == 2) {
    ao.beta1 = args["betas"][0];
    ao.beta2 = args["betas"][1];
  }
  ao.eps = args.value("eps", 1e-8);
  ao.weight_decay = args.value("weight_decay", 1e-2);
  const int steps = args.value("steps", 2);

  std::vector<NamedTensor> params;
  std::map<std::string, at::Tensor> by_name;
  for (const auto& p : unet->parameters()) {
    p.value.requires_grad_(true);
    params.push_back({p.name, p.value});
    by_name[p.name] = p.value;
  }
  if (params.size() != names.size()) {
    return absl::InvalidArgumentError(absl::StrCat("the UNet has ", params.size(),
                                                   " parameters, the reference ", names.size()));
  }
  ASSIGN_OR_RETURN(auto opt, MakeAdamW(params, ao));
  LossInputs in{ref["latents"], ref["noise"], ref["timesteps"], ref["encoder_hidden_states"]};
  if (ref.count("added_text_embeds")) in.added_text_embeds = ref["added_text_embeds"];
  if (ref.count("added_time_ids")) in.added_time_ids = ref["added_time_ids"];
  TrainStepComparison c;
  std::map<std::string, at::Tensor> tiny_grad;
  try {
    for (int step = 0; step < steps; ++step) {
      for (auto& p : params) p.value.mutable_grad() = at::Tensor();
      ASSIGN_OR_RETURN(at::Tensor loss, DiffusionLoss(*unet, schedule, in));
      loss.backward();
      std::vector<at::Tensor> grads;
      for (auto& p : params) grads.push_back(p.value.grad());
      const double want_loss = ref["losses"][step].item<double>();
      const double want_norm = ref["grad_norms"][step].item<double>();
      c.loss_rel_error.push_back(std::abs(loss.item<double>() - want_loss) / std::abs(want_loss));
      c.grad_norm_rel_error.push_back(std::abs(GlobalNorm(grads) - want_norm) / want_norm);
      for (size_t i = 0; i < grads.size(); ++i) {
        at::Tensor tiny = grads[i].abs() < 1e-5;
        at::Tensor& t = tiny_grad[params[i].name];
        t = t.defined() ? (t | tiny) : tiny;
      }
      RETURN_IF_ERROR(opt->Step(grads, lr));
    }
    at::Tensor norms = ref["after_step2_norms"];
    for (size_t i = 0; i < names.size(); ++i) {
      auto it = by_name.find(names[i]);
      if (it == by_name.end()) return absl::InvalidArgumentError("the UNet lacks " + names[i]);
      at::Tensor p = it->second.detach();
      const double want = norms[i].item<double>();
      c.worst_param_norm_rel_error = std::max(
          c.worst_param_norm_rel_error,
          std::abs(p.to(at::kDouble).norm().item<double>() - want) / std::max(want, 1.0));
      auto full = ref.find("after_step2." + names[i]);
      if (full == ref.end()) continue;
      ++c.params_compared_fully;
      const double scale = std::max(full->second.abs().max().item<double>(), 100 * lr);
      at::Tensor off = (p - full->second).abs() > 1e-4 * scale;
      c.elements_compared += p.numel();
      c.elements_differing += off.sum().item<int64_t>();
      c.elements_differing_with_clear_gradient +=
          (off & tiny_grad[names[i]].logical_not()).sum().item<int64_t>();
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("train step check: ", e.what_without_backtrace()));
  }
  return c;
}

}  // namespace dd::training
