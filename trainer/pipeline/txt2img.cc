#include "trainer/pipeline/txt2img.h"

#include <ATen/core/grad_mode.h>
#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <optional>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "trainer/diffusion/schedulers.h"

namespace dd::pipeline {
namespace {

// The sampler a scheduler config names. PNDM (the SD 1.5 default) and the
// others this project does not implement sample with DDIM instead.
std::string SamplerFor(const std::string& scheduler_json) {
  auto j = nlohmann::json::parse(scheduler_json, nullptr, false);
  if (!j.is_discarded() && j.value("_class_name", "") == "EulerDiscreteScheduler") return "euler";
  return "ddim";
}

}  // namespace

Txt2ImgPipeline::Txt2ImgPipeline(const model::DiffusersModel* model) : model_(model) {
  vae_scale_ = 1 << (model->vae->config().block_out_channels.size() - 1);
}

absl::StatusOr<Txt2ImgPipeline> Txt2ImgPipeline::Create(const model::DiffusersModel* model) {
  if (model == nullptr || !model->tokenizer || !model->text_encoder || !model->unet ||
      !model->vae) {
    return absl::FailedPreconditionError(
        "txt2img needs a model with tokenizer, text_encoder, unet and vae");
  }
  if (model->unet->config().text_time && (!model->tokenizer_2 || !model->text_encoder_2)) {
    return absl::FailedPreconditionError("an SDXL UNet needs tokenizer_2 and text_encoder_2");
  }
  return Txt2ImgPipeline(model);
}

int Txt2ImgPipeline::default_size() const {
  return static_cast<int>(model_->unet->config().sample_size) * vae_scale_;
}

absl::StatusOr<Txt2ImgPipeline::Conditioning> Txt2ImgPipeline::Encode(const std::string& prompt,
                                                                      bool zero_if_empty) const {
  const at::Device device = model_->text_encoder->parameters().front().value.device();
  auto ids_of = [&](const model::ClipTokenizer& tok, const std::string& text) {
    std::vector<int> ids = tok.EncodePadded(text);
    return at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong).unsqueeze(0).to(device);
  };
  Conditioning c;
  if (!model_->unet->config().text_time) {
    ASSIGN_OR_RETURN(auto out, model_->text_encoder->Forward(ids_of(*model_->tokenizer, prompt)));
    c.hidden = out.last_hidden_state;
    return c;
  }
  // SDXL: the penultimate hidden states of both encoders side by side, and
  // the second encoder's projected pooled output.
  ASSIGN_OR_RETURN(auto one, model_->text_encoder->Forward(ids_of(*model_->tokenizer, prompt)));
  ASSIGN_OR_RETURN(auto two,
                   model_->text_encoder_2->Forward(ids_of(*model_->tokenizer_2, prompt)));
  c.hidden = at::cat({one.hidden_states[one.hidden_states.size() - 2],
                      two.hidden_states[two.hidden_states.size() - 2]},
                     -1);
  c.pooled = two.text_embeds.defined() ? two.text_embeds : two.pooled;
  if (zero_if_empty && prompt.empty()) {  // force_zeros_for_empty_prompt
    c.hidden = at::zeros_like(c.hidden);
    c.pooled = at::zeros_like(c.pooled);
  }
  return c;
}

absl::StatusOr<at::Tensor> Txt2ImgPipeline::Generate(const Txt2ImgOptions& o) const {
  const model::UNet& unet = *model_->unet;
  const int width = o.width > 0 ? o.width : default_size();
  const int height = o.height > 0 ? o.height : default_size();
  const int grid = vae_scale_ * (1 << (unet.config().block_out_channels.size() - 1));
  if (width % grid != 0 || height % grid != 0) {
    return absl::InvalidArgumentError(absl::StrCat("width and height must be multiples of ", grid,
                                                   " for this model (got ", width, "x", height,
                                                   ")"));
  }
  if (o.steps < 1 || o.steps > 1000) {
    return absl::InvalidArgumentError(absl::StrCat("steps must be in 1..1000, got ", o.steps));
  }
  std::string sampler = o.sampler.empty() ? SamplerFor(model_->scheduler_config_json) : o.sampler;
  if (sampler != "ddim" && sampler != "euler") {
    return absl::InvalidArgumentError(absl::StrCat("unknown sampler \"", sampler,
                                                   "\" (ddim or euler)"));
  }
  ASSIGN_OR_RETURN(auto schedule,
                   diffusion::ParseScheduleConfig(model_->scheduler_config_json, "scheduler"));
  const std::vector<int64_t> latent_shape = {1, unet.config().in_channels, height / vae_scale_,
                                             width / vae_scale_};
  try {
    at::NoGradGuard no_grad;
    // Where the UNet's weights are (a GPU when the trainer placed them there).
    const at::Device device = unet.parameters().front().value.device();
    const bool cfg = o.guidance > 1.0;
    ASSIGN_OR_RETURN(Conditioning cond, Encode(o.prompt, false));
    at::Tensor hidden = cond.hidden, pooled = cond.pooled;
    if (cfg) {
      ASSIGN_OR_RETURN(Conditioning uncond, Encode(o.negative_prompt, true));
      hidden = at::cat({uncond.hidden, cond.hidden});
      if (pooled.defined()) pooled = at::cat({uncond.pooled, cond.pooled});
    }
    at::Tensor time_ids;
    if (unet.config().text_time) {
      // original size, crop top-left, target size
      time_ids = at::tensor(std::vector<float>{float(height), float(width), 0, 0, float(height),
                                               float(width)})
                     .unsqueeze(0)
                     .repeat({cfg ? 2 : 1, 1})
                     .to(device);
    }
    at::Tensor latents;
    if (o.initial_latents.defined()) {
      if (o.initial_latents.sizes() != at::IntArrayRef(latent_shape)) {
        return absl::InvalidArgumentError("initial latents do not match the image size");
      }
      latents = o.initial_latents.to(device, at::kFloat);
    } else {
      // Drawn on the CPU whatever the device, so a seed gives the same image.
      at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
      latents = at::randn(latent_shape, gen).to(device);
    }
    auto predict = [&](const at::Tensor& model_input, const at::Tensor& t) -> absl::StatusOr<at::Tensor> {
      at::Tensor x = cfg ? at::cat({model_input, model_input}) : model_input;
      at::Tensor ts = t.reshape({1}).expand({x.size(0)}).to(device);
      ASSIGN_OR_RETURN(at::Tensor out, unet.Forward(x, ts, hidden, pooled, time_ids));
      if (!cfg) return out;
      auto parts = out.chunk(2);
      return parts[0] + o.guidance * (parts[1] - parts[0]);
    };
    if (sampler == "ddim") {
      diffusion::DdimSampler ddim(schedule, o.steps);
      latents = latents * ddim.init_noise_sigma();
      for (int i = 0; i < o.steps; ++i) {
        at::Tensor t = ddim.timesteps()[i];
        ASSIGN_OR_RETURN(at::Tensor eps, predict(latents, t));
        latents = ddim.Step(eps, t.item<int64_t>(), latents);
        if (o.on_step) o.on_step(i + 1, o.steps);
      }
    } else {
      diffusion::EulerSampler euler(schedule, o.steps);
      latents = latents * euler.init_noise_sigma();
      for (int i = 0; i < o.steps; ++i) {
        ASSIGN_OR_RETURN(at::Tensor eps,
                         predict(euler.ScaleModelInput(latents, i), euler.timesteps()[i]));
        latents = euler.Step(eps, i, latents);
        if (o.on_step) o.on_step(i + 1, o.steps);
      }
    }
    ASSIGN_OR_RETURN(at::Tensor image, model_->vae->Decode(latents / model_->vae->scaling_factor()));
    return (image / 2 + 0.5).clamp(0, 1)[0].permute({1, 2, 0}).contiguous().cpu();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("txt2img: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<RgbImage> ToRgbImage(const at::Tensor& image) {
  if (image.dim() != 3 || image.size(2) != 3) {
    return absl::InvalidArgumentError("expected a [H, W, 3] image");
  }
  at::Tensor u8 = (image.cpu().to(at::kFloat).clamp(0, 1) * 255).round().to(at::kByte).contiguous();
  RgbImage out;
  out.height = static_cast<int>(u8.size(0));
  out.width = static_cast<int>(u8.size(1));
  out.pixels.assign(u8.data_ptr<uint8_t>(), u8.data_ptr<uint8_t>() + u8.numel());
  return out;
}

absl::StatusOr<RgbImage> MakeGrid(const std::vector<RgbImage>& images, int columns) {
  if (images.empty() || columns <= 0) return absl::InvalidArgumentError("empty grid");
  const int w = images[0].width, h = images[0].height;
  for (const RgbImage& im : images) {
    if (im.width != w || im.height != h) {
      return absl::InvalidArgumentError("grid images differ in size");
    }
  }
  const int cols = std::min<int>(columns, images.size());
  const int rows = (static_cast<int>(images.size()) + cols - 1) / cols;
  RgbImage grid;
  grid.width = cols * w;
  grid.height = rows * h;
  grid.pixels.assign(static_cast<size_t>(grid.width) * grid.height * 3, 0);
  for (size_t i = 0; i < images.size(); ++i) {
    const int gx = static_cast<int>(i) % cols * w, gy = static_cast<int>(i) / cols * h;
    for (int y = 0; y < h; ++y) {
      std::copy_n(&images[i].pixels[static_cast<size_t>(y) * w * 3], w * 3,
                  &grid.pixels[(static_cast<size_t>(gy + y) * grid.width + gx) * 3]);
    }
  }
  return grid;
}

}  // namespace dd::pipeline
