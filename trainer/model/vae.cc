#include "trainer/model/vae.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/io/file_util.h"
#include "trainer/model/layers.h"
#include "trainer/model/torch_tensors.h"

namespace dd::model {
namespace {

constexpr double kVaeEps = 1e-6;  // every VAE norm

// The VAE's mid-block attention: one head over all channels, biases on
// q/k/v, residual.
struct SpatialAttention {
  GroupNorm norm;
  Attention attn;
  void Load(WeightTable& t, const std::string& p, int64_t c, int64_t groups) {
    norm.Load(t, p + ".group_norm", c, groups, kVaeEps);
    attn.Load(t, p, c, c, /*heads=*/1, /*qkv_bias=*/true);
  }
  at::Tensor operator()(const at::Tensor& x) const {
    int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
    at::Tensor y = norm(x).view({b, c, h * w}).transpose(1, 2);
    y = attn(y, y);
    return y.transpose(1, 2).reshape({b, c, h, w}) + x;
  }
};

struct MidBlock {
  Resnet first, second;
  SpatialAttention attention;
  bool has_attention = true;
  void Load(WeightTable& t, const std::string& p, int64_t c, int64_t groups, bool attention_) {
    first.Load(t, p + ".resnets.0", c, c, 0, groups, kVaeEps);
    has_attention = attention_;
    if (has_attention) attention.Load(t, p + ".attentions.0", c, groups);
    second.Load(t, p + ".resnets.1", c, c, 0, groups, kVaeEps);
  }
  at::Tensor operator()(at::Tensor x) const {
    x = first(x);
    if (has_attention) x = attention(x);
    return second(x);
  }
};

}  // namespace

struct AutoencoderKL::Impl {
  Conv enc_in, enc_out, quant, post_quant, dec_in, dec_out;
  GroupNorm enc_norm, dec_norm;
  std::vector<std::vector<Resnet>> enc_blocks, dec_blocks;
  std::vector<Conv> downsamplers, upsamplers;  // empty conv for the last block
  MidBlock enc_mid, dec_mid;
  std::vector<AutoencoderKL::Parameter> parameters;
};

absl::StatusOr<VaeConfig> ParseVaeConfig(const std::string& text, const std::string& source) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, " is not a JSON object"));
  }
  VaeConfig c;
  try {
    c.in_channels = j.value("in_channels", c.in_channels);
    c.out_channels = j.value("out_channels", c.out_channels);
    c.latent_channels = j.value("latent_channels", c.latent_channels);
    c.block_out_channels = j.value("block_out_channels", c.block_out_channels);
    c.layers_per_block = j.value("layers_per_block", c.layers_per_block);
    c.norm_num_groups = j.value("norm_num_groups", c.norm_num_groups);
    c.scaling_factor = j.value("scaling_factor", c.scaling_factor);
    c.mid_block_add_attention = j.value("mid_block_add_attention", true);
    c.use_quant_conv = j.value("use_quant_conv", true);
    c.use_post_quant_conv = j.value("use_post_quant_conv", true);
    if (j.contains("act_fn") && j["act_fn"] != "silu") {
      return absl::InvalidArgumentError(absl::StrCat(source, ": act_fn ", j["act_fn"].dump(),
                                                     " is not supported"));
    }
    for (const char* key : {"down_block_types", "up_block_types"}) {
      if (!j.contains(key)) continue;
      for (const auto& t : j[key]) {
        std::string want = std::string(key) == "down_block_types" ? "DownEncoderBlock2D"
                                                                   : "UpDecoderBlock2D";
        if (t != want) {
          return absl::InvalidArgumentError(absl::StrCat(source, ": ", key, " entry ", t.dump(),
                                                         " is not supported"));
        }
      }
    }
    if (j.contains("shift_factor") && !j["shift_factor"].is_null()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": shift_factor is not supported"));
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", e.what()));
  }
  if (c.block_out_channels.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": block_out_channels is empty"));
  }
  return c;
}

at::Tensor LatentDistribution::Sample(std::optional<at::Generator> generator) const {
  at::Tensor noise = generator.has_value() ? at::randn(mean.sizes(), *generator, mean.options())
                                           : at::randn(mean.sizes(), mean.options());
  return mean + std * noise;
}

AutoencoderKL::AutoencoderKL() = default;
AutoencoderKL::~AutoencoderKL() = default;

absl::StatusOr<std::unique_ptr<AutoencoderKL>> AutoencoderKL::Load(const std::string& dir) {
  auto text = ReadFileToString(dir + "/config.json");
  if (!text.ok()) return text.status();
  auto config = ParseVaeConfig(*text, dir + "/config.json");
  if (!config.ok()) return config.status();
  std::string weights = dir + "/diffusion_pytorch_model.safetensors";
  auto tensors = LoadPartTensors(dir, "diffusion_pytorch_model");
  if (!tensors.ok()) return tensors.status();
  WeightTable t(std::move(*tensors), weights);
  auto vae = Build(*config, &t);
  if (vae.ok()) (*vae)->config_json_ = *text;
  return vae;
}

absl::StatusOr<std::vector<AutoencoderKL::ParameterShape>> AutoencoderKL::ParameterShapes(
    const VaeConfig& config) {
  WeightTable t = WeightTable::Random(0);
  auto vae = Build(config, &t);
  if (!vae.ok()) return vae.status();
  std::vector<ParameterShape> out;
  for (const auto& p : t.used_) out.push_back({p.name, p.value.sizes().vec()});
  return out;
}

absl::StatusOr<std::unique_ptr<AutoencoderKL>> AutoencoderKL::Build(const VaeConfig& config,
                                                                    void* table) {
  WeightTable& t = *static_cast<WeightTable*>(table);
  const VaeConfig& c = config;
  std::unique_ptr<AutoencoderKL> vae(new AutoencoderKL());
  vae->config_ = c;
  vae->impl_ = std::make_unique<Impl>();
  Impl& m = *vae->impl_;
  const auto& ch = c.block_out_channels;
  const int64_t n = ch.size(), g = c.norm_num_groups, lat = c.latent_channels;
  // Encoder.
  m.enc_in.Load(t, "encoder.conv_in", c.in_channels, ch[0], 3);
  int64_t out = ch[0];
  for (int64_t i = 0; i < n; ++i) {
    int64_t in = out;
    out = ch[i];
    std::vector<Resnet> resnets(c.layers_per_block);
    for (int64_t l = 0; l < c.layers_per_block; ++l) {
      resnets[l].Load(t, absl::StrCat("encoder.down_blocks.", i, ".resnets.", l), l == 0 ? in : out,
                      out, 0, g, kVaeEps);
    }
    m.enc_blocks.push_back(std::move(resnets));
    Conv down;
    if (i + 1 < n) {
      down.Load(t, absl::StrCat("encoder.down_blocks.", i, ".downsamplers.0.conv"), out, out, 3, 2);
      down.padding = 0;  // padded asymmetrically (0, 1, 0, 1) in Forward
    }
    m.downsamplers.push_back(down);
  }
  m.enc_mid.Load(t, "encoder.mid_block", ch[n - 1], g, c.mid_block_add_attention);
  m.enc_norm.Load(t, "encoder.conv_norm_out", ch[n - 1], g, kVaeEps);
  m.enc_out.Load(t, "encoder.conv_out", ch[n - 1], 2 * lat, 3);
  if (c.use_quant_conv) m.quant.Load(t, "quant_conv", 2 * lat, 2 * lat, 1);
  // Decoder.
  if (c.use_post_quant_conv) m.post_quant.Load(t, "post_quant_conv", lat, lat, 1);
  m.dec_in.Load(t, "decoder.conv_in", lat, ch[n - 1], 3);
  m.dec_mid.Load(t, "decoder.mid_block", ch[n - 1], g, c.mid_block_add_attention);
  int64_t prev = ch[n - 1];
  for (int64_t i = 0; i < n; ++i) {
    int64_t up_out = ch[n - 1 - i];
    std::vector<Resnet> resnets(c.layers_per_block + 1);
    for (int64_t l = 0; l <= c.layers_per_block; ++l) {
      resnets[l].Load(t, absl::StrCat("decoder.up_blocks.", i, ".resnets.", l),
                      l == 0 ? prev : up_out, up_out, 0, g, kVaeEps);
    }
    m.dec_blocks.push_back(std::move(resnets));
    Conv up;
    if (i + 1 < n) up.Load(t, absl::StrCat("decoder.up_blocks.", i, ".upsamplers.0.conv"), up_out, up_out, 3);
    m.upsamplers.push_back(up);
    prev = up_out;
  }
  m.dec_norm.Load(t, "decoder.conv_norm_out", ch[0], g, kVaeEps);
  m.dec_out.Load(t, "decoder.conv_out", ch[0], c.out_channels, 3);
  if (!t.status().ok()) return t.status();
  m.parameters = t.used_;
  return vae;
}

const std::vector<AutoencoderKL::Parameter>& AutoencoderKL::parameters() const {
  return impl_->parameters;
}

absl::Status AutoencoderKL::SetScalingFactor(double factor) {
  if (!std::isfinite(factor) || !(factor > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("scaling_factor must be finite and > 0, got ", factor));
  }
  if (config_json_.empty()) {
    return absl::FailedPreconditionError("only a VAE loaded from a folder has a config to change");
  }
  nlohmann::json j = nlohmann::json::parse(config_json_, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::InternalError("the loaded VAE config is not a JSON object");
  j["scaling_factor"] = factor;
  config_json_ = j.dump(2);
  config_.scaling_factor = factor;
  return absl::OkStatus();
}

absl::Status AutoencoderKL::Save(const std::string& dir) const {
  if (config_json_.empty()) {
    return absl::FailedPreconditionError("only a VAE loaded from a folder can be saved");
  }
  return SaveDiffusersPart(dir, config_json_, "diffusion_pytorch_model.safetensors", impl_->parameters);
}

absl::StatusOr<LatentDistribution> AutoencoderKL::Encode(const at::Tensor& image) const {
  const int64_t factor = int64_t{1} << (config_.block_out_channels.size() - 1);
  if (image.dim() != 4 || image.size(1) != config_.in_channels || image.size(2) % factor ||
      image.size(3) % factor) {
    return absl::InvalidArgumentError(absl::StrCat("image must be [batch, ", config_.in_channels,
                                                    ", H, W] with H, W divisible by ", factor));
  }
  try {
    const Impl& m = *impl_;
    at::Tensor x = m.enc_in(image);
    for (size_t i = 0; i < m.enc_blocks.size(); ++i) {
      for (const Resnet& r : m.enc_blocks[i]) x = r(x);
      if (m.downsamplers[i].w.defined()) {
        x = m.downsamplers[i](at::constant_pad_nd(x, {0, 1, 0, 1}));
      }
    }
    x = m.enc_mid(x);
    x = m.enc_out(at::silu(m.enc_norm(x)));
    if (config_.use_quant_conv) x = m.quant(x);
    auto parts = x.chunk(2, 1);
    LatentDistribution d;
    d.mean = parts[0];
    d.logvar = at::clamp(parts[1], -30.0, 20.0);
    d.std = at::exp(0.5 * d.logvar);
    return d;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("VAE encode: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<at::Tensor> AutoencoderKL::Decode(const at::Tensor& z) const {
  if (z.dim() != 4 || z.size(1) != config_.latent_channels) {
    return absl::InvalidArgumentError(
        absl::StrCat("latents must be [batch, ", config_.latent_channels, ", h, w]"));
  }
  try {
    const Impl& m = *impl_;
    at::Tensor x = config_.use_post_quant_conv ? m.post_quant(z) : z;
    x = m.dec_mid(m.dec_in(x));
    for (size_t i = 0; i < m.dec_blocks.size(); ++i) {
      for (const Resnet& r : m.dec_blocks[i]) x = r(x);
      if (m.upsamplers[i].w.defined()) {
        x = m.upsamplers[i](at::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2}));
      }
    }
    return m.dec_out(at::silu(m.dec_norm(x)));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("VAE decode: ", e.what_without_backtrace()));
  }
}

}  // namespace dd::model
