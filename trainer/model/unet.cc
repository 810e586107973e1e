#include "trainer/model/unet.h"

#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <map>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/io/file_util.h"
#include "trainer/model/layers.h"
#include "trainer/model/torch_compat.h"
#include "trainer/model/torch_tensors.h"

namespace dd::model {
namespace {

using nlohmann::json;

// Reads a config key that is an int or a per-block list of ints.
absl::StatusOr<std::vector<int64_t>> PerBlock(const json& j, const char* key, size_t blocks,
                                              const std::string& source) {
  const json& v = j[key];
  std::vector<int64_t> out;
  if (v.is_number_integer()) {
    out.assign(blocks, v.get<int64_t>());
  } else if (v.is_array() && v.size() == blocks) {
    for (const auto& x : v) {
      if (!x.is_number_integer()) break;
      out.push_back(x.get<int64_t>());
    }
  }
  if (out.size() != blocks) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": \"", key,
                                                   "\" must be an int or a list of ", blocks, " ints"));
  }
  return out;
}

struct TransformerBlock {
  LayerNorm norm1, norm2, norm3;
  Attention attn1, attn2;
  Linear ff_in, ff_out;
  void Load(WeightTable& t, const std::string& p, int64_t dim, int64_t heads, int64_t context) {
    norm1.Load(t, p + ".norm1", dim);
    attn1.Load(t, p + ".attn1", dim, dim, heads);
    norm2.Load(t, p + ".norm2", dim);
    attn2.Load(t, p + ".attn2", dim, context, heads);
    norm3.Load(t, p + ".norm3", dim);
    ff_in.Load(t, p + ".ff.net.0.proj", dim, dim * 4 * 2);  // GEGLU
    ff_out.Load(t, p + ".ff.net.2", dim * 4, dim);
  }
  at::Tensor operator()(at::Tensor x, const at::Tensor& context) const {
    at::Tensor n1 = norm1(x);
    x = x + attn1(n1, n1);
    x = x + attn2(norm2(x), context);
    auto parts = ff_in(norm3(x)).chunk(2, -1);
    return x + ff_out(parts[0] * at::gelu(parts[1]));
  }
};

struct Transformer2D {
  GroupNorm norm;
  Conv proj_in_conv, proj_out_conv;
  Linear proj_in_linear, proj_out_linear;
  bool linear = false;
  std::vector<TransformerBlock> blocks;
  void Load(WeightTable& t, const std::string& p, int64_t channels, int64_t heads, int64_t layers,
            const UNetConfig& c) {
    norm.Load(t, p + ".norm", channels, c.norm_num_groups, 1e-6);
    linear = c.use_linear_projection;
    if (linear) {
      proj_in_linear.Load(t, p + ".proj_in", channels, channels);
      proj_out_linear.Load(t, p + ".proj_out", channels, channels);
    } else {
      proj_in_conv.Load(t, p + ".proj_in", channels, channels, 1);
      proj_out_conv.Load(t, p + ".proj_out", channels, channels, 1);
    }
    blocks.resize(layers);
    for (int64_t i = 0; i < layers; ++i) {
      blocks[i].Load(t, absl::StrCat(p, ".transformer_blocks.", i), channels, heads,
                     c.cross_attention_dim);
    }
  }
  at::Tensor operator()(const at::Tensor& x, const at::Tensor& context) const {
    int64_t b = x.size(0), ch = x.size(1), h = x.size(2), w = x.size(3);
    at::Tensor y = norm(x);
    if (!linear) y = proj_in_conv(y);
    y = y.permute({0, 2, 3, 1}).reshape({b, h * w, ch});
    if (linear) y = proj_in_linear(y);
    for (const auto& block : blocks) y = block(y, context);
    if (linear) y = proj_out_linear(y);
    y = y.reshape({b, h, w, ch}).permute({0, 3, 1, 2}).contiguous();
    if (!linear) y = proj_out_conv(y);
    return y + x;
  }
};

struct Block {
  std::vector<Resnet> resnets;
  std::vector<Transformer2D> attentions;
  bool resample = false;
  Conv resample_conv;
};

// One layer of a block: a resnet and the attention after it (if any). The
// unit that gradient checkpointing recomputes.
struct LayerRef {
  const Resnet* resnet;
  const Transformer2D* attention;  // null in blocks without attention
  at::Tensor operator()(const at::Tensor& x, const at::Tensor& temb, const at::Tensor& context) const {
    at::Tensor y = (*resnet)(x, temb);
    return attention != nullptr ? (*attention)(y, context) : y;
  }
};

// Gradient checkpointing of a layer (torch.utils.checkpoint, reentrant
// form): the forward pass runs without recording the graph and keeps only
// the layer's inputs; backward runs the layer again with the graph and
// back-propagates through it, which also accumulates the parameters'
// gradients. Activation memory drops to one layer's worth at the cost of a
// second forward pass.
struct CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& x, const at::Tensor& temb,
                                                const at::Tensor& context, int64_t layer) {
    ctx->saved_data["layer"] = layer;
    // The recomputation must run under the autocast the forward pass ran
    // under (autocast is off by the time backward runs), or it mixes the
    // saved low-precision activations with float32 weights.
    const AutocastState autocast = CurrentAutocast();
    ctx->saved_data["autocast"] = std::vector<int64_t>{
        autocast.cpu.enabled, static_cast<int64_t>(autocast.cpu.dtype), autocast.cuda.enabled,
        static_cast<int64_t>(autocast.cuda.dtype)};
    ctx->save_for_backward({x, temb, context});
    at::NoGradGuard no_grad;
    return {(*reinterpret_cast<const LayerRef*>(layer))(x, temb, context)};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto* layer = reinterpret_cast<const LayerRef*>(ctx->saved_data["layer"].toInt());
    std::vector<at::Tensor> in;
    for (const at::Tensor& t : ctx->get_saved_variables()) {
      in.push_back(t.defined() ? t.detach().requires_grad_(t.requires_grad()) : t);
    }
    at::Tensor out;
    {
      at::AutoGradMode enable(true);
      const std::vector<int64_t> saved = ctx->saved_data["autocast"].toIntVector();
      ScopedAutocast autocast({{saved[0] != 0, static_cast<at::ScalarType>(saved[1])},
                               {saved[2] != 0, static_cast<at::ScalarType>(saved[3])}});
      out = (*layer)(in[0], in[1], in[2]);
    }
    at::Tensor g = grad_out[0];
    if (g.scalar_type() != out.scalar_type()) g = g.to(out.scalar_type());
    torch::autograd::backward({out}, {g});
    auto grad_of = [](const at::Tensor& t) { return t.defined() && t.requires_grad() ? t.grad() : at::Tensor(); };
    return {grad_of(in[0]), grad_of(in[1]), grad_of(in[2]), at::Tensor()};
  }
};

}  // namespace

struct UNet::Impl {
  Linear time_1, time_2;
  Linear add_1, add_2;  // text_time
  Conv conv_in, conv_out;
  GroupNorm norm_out;
  std::vector<Block> down, up;
  Block mid;
  std::vector<UNet::Parameter> parameters;
  LoraSlots lora_slots;
  // Layers in forward order (down blocks, mid, up blocks), for checkpointing.
  std::vector<LayerRef> down_layers, up_layers;
  LayerRef mid_first, mid_second;
  bool checkpointing = false;
};

absl::StatusOr<UNetConfig> ParseUNetConfig(const std::string& text, const std::string& source) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, " is not a JSON object"));
  }
  auto unsupported = [&](const char* key, const std::string& value) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", key, " = ", value,
                                                   " is not supported by this UNet"));
  };
  // Settings that must stay at their SD 1.x/2.x values.
  struct Fixed {
    const char* key;
    json allowed;
  } fixed[] = {
      {"class_embed_type", nullptr},
      {"time_cond_proj_dim", nullptr},  {"encoder_hid_dim", nullptr},
      {"num_class_embeds", nullptr},    {"time_embedding_type", "positional"},
      {"resnet_time_scale_shift", "default"}, {"act_fn", "silu"},
      {"attention_type", "default"},    {"dual_cross_attention", false},
      {"only_cross_attention", false},  {"conv_in_kernel", 3},
      {"conv_out_kernel", 3},           {"mid_block_type", "UNetMidBlock2DCrossAttn"},
      {"resnet_out_scale_factor", 1.0}, {"mid_block_scale_factor", 1},
      {"resnet_skip_time_act", false},  {"time_embedding_act_fn", nullptr},
      {"timestep_post_act", nullptr},   {"class_embeddings_concat", false},
      {"reverse_transformer_layers_per_block", nullptr},
  };
  for (const auto& f : fixed) {
    if (j.contains(f.key) && j[f.key] != f.allowed) return unsupported(f.key, j[f.key].dump());
  }
  UNetConfig c;
  try {
    c.in_channels = j.value("in_channels", c.in_channels);
    c.out_channels = j.value("out_channels", c.out_channels);
    c.block_out_channels = j.value("block_out_channels", c.block_out_channels);
    c.layers_per_block = j.value("layers_per_block", c.layers_per_block);
    c.norm_num_groups = j.value("norm_num_groups", c.norm_num_groups);
    c.norm_eps = j.value("norm_eps", c.norm_eps);
    c.cross_attention_dim = j.value("cross_attention_dim", c.cross_attention_dim);
    c.use_linear_projection = j.value("use_linear_projection", false);
    c.flip_sin_to_cos = j.value("flip_sin_to_cos", true);
    c.freq_shift = j.value("freq_shift", 0.0);
    c.center_input_sample = j.value("center_input_sample", false);
    c.downsample_padding = j.value("downsample_padding", int64_t{1});
    if (j.contains("sample_size") && j["sample_size"].is_number_integer()) {
      c.sample_size = j["sample_size"].get<int64_t>();
    }
    c.down_block_types = j.at("down_block_types").get<std::vector<std::string>>();
    c.up_block_types = j.at("up_block_types").get<std::vector<std::string>>();
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", e.what()));
  }
  if (j.contains("addition_embed_type") && !j["addition_embed_type"].is_null()) {
    if (j["addition_embed_type"] != "text_time") {
      return unsupported("addition_embed_type", j["addition_embed_type"].dump());
    }
    c.text_time = true;
    if (!j.contains("addition_time_embed_dim") || !j["addition_time_embed_dim"].is_number_integer() ||
        !j.contains("projection_class_embeddings_input_dim") ||
        !j["projection_class_embeddings_input_dim"].is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": text_time needs integer addition_time_embed_dim and "
                  "projection_class_embeddings_input_dim"));
    }
    c.addition_time_embed_dim = j["addition_time_embed_dim"].get<int64_t>();
    c.projection_class_embeddings_input_dim =
        j["projection_class_embeddings_input_dim"].get<int64_t>();
    if (c.projection_class_embeddings_input_dim <= 6 * c.addition_time_embed_dim) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": projection_class_embeddings_input_dim must exceed 6 * addition_time_embed_dim"));
    }
  }
  size_t n = c.block_out_channels.size();
  if (n == 0 || c.down_block_types.size() != n || c.up_block_types.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": block_out_channels, down_block_types and up_block_types must have the same length"));
  }
  for (const auto& t : c.down_block_types) {
    if (t != "CrossAttnDownBlock2D" && t != "DownBlock2D") return unsupported("down_block_types", t);
  }
  for (const auto& t : c.up_block_types) {
    if (t != "CrossAttnUpBlock2D" && t != "UpBlock2D") return unsupported("up_block_types", t);
  }
  if (c.downsample_padding != 1) return unsupported("downsample_padding", std::to_string(c.downsample_padding));
  // diffusers: num_attention_heads defaults to attention_head_dim (which SD1
  // configs use to mean the number of heads).
  const char* heads_key = j.contains("num_attention_heads") && !j["num_attention_heads"].is_null()
                              ? "num_attention_heads"
                              : "attention_head_dim";
  if (!j.contains(heads_key)) return absl::InvalidArgumentError(absl::StrCat(source, ": needs ", heads_key));
  auto heads = PerBlock(j, heads_key, n, source);
  if (!heads.ok()) return heads.status();
  c.heads = *heads;
  if (j.contains("transformer_layers_per_block")) {
    auto layers = PerBlock(j, "transformer_layers_per_block", n, source);
    if (!layers.ok()) return layers.status();
    c.transformer_layers = *layers;
  } else {
    c.transformer_layers.assign(n, 1);
  }
  for (size_t i = 0; i < n; ++i) {
    if (c.heads[i] <= 0 || c.block_out_channels[i] % c.heads[i] != 0 ||
        c.block_out_channels[i] % c.norm_num_groups != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": block ", i, " has ", c.block_out_channels[i], " channels, not divisible by ",
          c.heads[i], " heads and ", c.norm_num_groups, " norm groups"));
    }
  }
  return c;
}

at::Tensor TimestepEmbedding(const at::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos,
                             double freq_shift) {
  int64_t half = dim / 2;
  at::Tensor exponent = -std::log(10000.0) * at::arange(half, timesteps.options().dtype(at::kFloat)) /
                        (half - freq_shift);
  at::Tensor emb = timesteps.to(at::kFloat).unsqueeze(1) * at::exp(exponent).unsqueeze(0);
  emb = at::cat({at::sin(emb), at::cos(emb)}, -1);
  if (flip_sin_to_cos) emb = at::cat({emb.slice(1, half), emb.slice(1, 0, half)}, -1);
  if (dim % 2 == 1) emb = at::constant_pad_nd(emb, {0, 1});
  return emb;
}

UNet::UNet() = default;
UNet::~UNet() = default;

absl::StatusOr<std::unique_ptr<UNet>> UNet::Load(const std::string& dir) {
  auto text = ReadFileToString(dir + "/config.json");
  if (!text.ok()) return text.status();
  auto config = ParseUNetConfig(*text, dir + "/config.json");
  if (!config.ok()) return config.status();
  std::string weights = dir + "/diffusion_pytorch_model.safetensors";
  auto tensors = LoadPartTensors(dir, "diffusion_pytorch_model");
  if (!tensors.ok()) return tensors.status();
  WeightTable t(std::move(*tensors), weights);
  auto unet = Build(*config, &t);
  if (unet.ok()) (*unet)->config_json_ = *text;
  return unet;
}

absl::StatusOr<std::unique_ptr<UNet>> UNet::Random(const UNetConfig& config, uint64_t seed) {
  WeightTable t = WeightTable::Random(seed);
  return Build(config, &t);
}

absl::StatusOr<std::unique_ptr<UNet>> UNet::Build(const UNetConfig& config, void* table) {
  WeightTable& t = *static_cast<WeightTable*>(table);
  const UNetConfig& c = config;
  std::unique_ptr<UNet> unet(new UNet());
  unet->config_ = c;
  unet->impl_ = std::make_unique<Impl>();
  Impl& m = *unet->impl_;
  const auto& ch = c.block_out_channels;
  const int64_t n = ch.size(), temb = ch[0] * 4;
  m.time_1.Load(t, "time_embedding.linear_1", ch[0], temb);
  m.time_2.Load(t, "time_embedding.linear_2", temb, temb);
  if (c.text_time) {
    m.add_1.Load(t, "add_embedding.linear_1", c.projection_class_embeddings_input_dim, temb);
    m.add_2.Load(t, "add_embedding.linear_2", temb, temb);
  }
  m.conv_in.Load(t, "conv_in", c.in_channels, ch[0], 3);
  int64_t out = ch[0];
  m.down.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    int64_t in = out;
    out = ch[i];
    Block& b = m.down[i];
    bool attn = c.down_block_types[i] == "CrossAttnDownBlock2D";
    for (int64_t l = 0; l < c.layers_per_block; ++l) {
      std::string p = absl::StrCat("down_blocks.", i);
      b.resnets.emplace_back();
      b.resnets.back().Load(t, absl::StrCat(p, ".resnets.", l), l == 0 ? in : out, out, temb,
                            c.norm_num_groups, c.norm_eps);
      if (attn) {
        b.attentions.emplace_back();
        b.attentions.back().Load(t, absl::StrCat(p, ".attentions.", l), out, c.heads[i],
                                 c.transformer_layers[i], c);
      }
    }
    b.resample = i + 1 < n;
    if (b.resample) b.resample_conv.Load(t, absl::StrCat("down_blocks.", i, ".downsamplers.0.conv"), out, out, 3, 2);
  }
  // Middle: resnet, (attention, resnet).
  m.mid.resnets.resize(2);
  m.mid.resnets[0].Load(t, "mid_block.resnets.0", ch[n - 1], ch[n - 1], temb, c.norm_num_groups,
                        c.norm_eps);
  m.mid.attentions.resize(1);
  m.mid.attentions[0].Load(t, "mid_block.attentions.0", ch[n - 1], c.heads[n - 1],
                           c.transformer_layers[n - 1], c);
  m.mid.resnets[1].Load(t, "mid_block.resnets.1", ch[n - 1], ch[n - 1], temb, c.norm_num_groups,
                        c.norm_eps);
  // Up blocks mirror the down blocks (diffusers' channel bookkeeping).
  m.up.resize(n);
  int64_t prev = ch[n - 1];
  for (int64_t i = 0; i < n; ++i) {
    int64_t r = n - 1 - i;
    int64_t up_out = ch[r];
    int64_t up_in = ch[std::max<int64_t>(r - 1, 0)];
    Block& b = m.up[i];
    bool attn = c.up_block_types[i] == "CrossAttnUpBlock2D";
    int64_t layers = c.layers_per_block + 1;
    for (int64_t l = 0; l < layers; ++l) {
      int64_t skip = l == layers - 1 ? up_in : up_out;
      int64_t res_in = l == 0 ? prev : up_out;
      std::string p = absl::StrCat("up_blocks.", i);
      b.resnets.emplace_back();
      b.resnets.back().Load(t, absl::StrCat(p, ".resnets.", l), res_in + skip, up_out, temb,
                            c.norm_num_groups, c.norm_eps);
      if (attn) {
        b.attentions.emplace_back();
        b.attentions.back().Load(t, absl::StrCat(p, ".attentions.", l), up_out, c.heads[r],
                                 c.transformer_layers[r], c);
      }
    }
    b.resample = i + 1 < n;
    if (b.resample) b.resample_conv.Load(t, absl::StrCat("up_blocks.", i, ".upsamplers.0.conv"), up_out, up_out, 3);
    prev = up_out;
  }
  m.norm_out.Load(t, "conv_norm_out", ch[0], c.norm_num_groups, c.norm_eps);
  m.conv_out.Load(t, "conv_out", ch[0], c.out_channels, 3);
  if (!t.status().ok()) return t.status();
  m.parameters = t.used_;
  m.lora_slots = t.TakeLoraSlots();
  // The vectors of blocks are final now, so pointers into them stay valid.
  auto layers_of = [](const Block& b, std::vector<LayerRef>* out) {
    for (size_t l = 0; l < b.resnets.size(); ++l) {
      out->push_back({&b.resnets[l], b.attentions.empty() ? nullptr : &b.attentions[l]});
    }
  };
  for (const Block& b : m.down) layers_of(b, &m.down_layers);
  for (const Block& b : m.up) layers_of(b, &m.up_layers);
  m.mid_first = {&m.mid.resnets[0], &m.mid.attentions[0]};
  return unet;
}

void UNet::SetGradientCheckpointing(bool enabled) { impl_->checkpointing = enabled; }

const std::vector<UNet::Parameter>& UNet::parameters() const { return impl_->parameters; }
LoraSlots& UNet::lora_slots() { return impl_->lora_slots; }
const LoraSlots& UNet::lora_slots() const { return impl_->lora_slots; }

absl::Status UNet::Save(const std::string& dir) const {
  if (config_json_.empty()) {
    return absl::FailedPreconditionError("only a UNet loaded from a folder can be saved");
  }
  return SaveDiffusersPart(dir, config_json_, "diffusion_pytorch_model.safetensors", impl_->parameters);
}

absl::StatusOr<at::Tensor> UNet::Forward(const at::Tensor& sample, const at::Tensor& timesteps,
                                         const at::Tensor& context,
                                         const at::Tensor& added_text_embeds,
                                         const at::Tensor& added_time_ids) const {
  const UNetConfig& c = config_;
  const int64_t n = c.block_out_channels.size();
  int64_t factor = int64_t{1} << (n - 1);
  if (sample.dim() != 4 || sample.size(1) != c.in_channels || sample.size(2) % factor != 0 ||
      sample.size(3) % factor != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sample must be [batch, ", c.in_channels, ", H, W] with H and W divisible by ", factor));
  }
  if (context.dim() != 3 || context.size(0) != sample.size(0) ||
      context.size(2) != c.cross_attention_dim) {
    return absl::InvalidArgumentError(absl::StrCat("encoder_hidden_states must be [batch, tokens, ",
                                                   c.cross_attention_dim, "]"));
  }
  if (timesteps.dim() > 1 || (timesteps.dim() == 1 && timesteps.size(0) != sample.size(0))) {
    return absl::InvalidArgumentError("timesteps must be a scalar or [batch]");
  }
  if (c.text_time) {
    int64_t pooled = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim;
    if (!added_text_embeds.defined() || !added_time_ids.defined() ||
        added_text_embeds.dim() != 2 || added_text_embeds.size(0) != sample.size(0) ||
        added_text_embeds.size(1) != pooled || added_time_ids.dim() != 2 ||
        added_time_ids.size(0) != sample.size(0) || added_time_ids.size(1) != 6) {
      return absl::InvalidArgumentError(absl::StrCat(
          "this UNet (text_time) needs added_text_embeds [batch, ", pooled,
          "] and added_time_ids [batch, 6]"));
    }
  }
  try {
    const Impl& m = *impl_;
    at::Tensor t = timesteps.dim() == 0 ? timesteps.expand({sample.size(0)}) : timesteps;
    at::Tensor temb = TimestepEmbedding(t, c.block_out_channels[0], c.flip_sin_to_cos, c.freq_shift);
    temb = m.time_2(at::silu(m.time_1(temb)));
    if (c.text_time) {
      // SDXL: sinusoidal embeddings of the six time ids next to the pooled
      // text embedding, projected and added to the time embedding.
      at::Tensor ids = TimestepEmbedding(added_time_ids.flatten(), c.addition_time_embed_dim,
                                         c.flip_sin_to_cos, c.freq_shift)
                           .reshape({sample.size(0), -1});
      at::Tensor add = at::cat({added_text_embeds.to(at::kFloat), ids}, -1);
      temb = temb + m.add_2(at::silu(m.add_1(add)));
    }
    at::Tensor x = c.center_input_sample ? 2 * sample - 1.0 : sample;
    x = m.conv_in(x);
    std::vector<at::Tensor> skips = {x};
    // Runs one layer, checkpointed when training with checkpointing on.
    const bool checkpoint = m.checkpointing && at::GradMode::is_enabled();
    auto run = [&](const LayerRef& layer, const at::Tensor& in) {
      if (!checkpoint) return layer(in, temb, context);
      return CheckpointedLayer::apply(in, temb, context, reinterpret_cast<int64_t>(&layer))[0];
    };
    size_t k = 0;
    for (const Block& b : m.down) {
      for (size_t l = 0; l < b.resnets.size(); ++l) {
        x = run(m.down_layers[k++], x);
        skips.push_back(x);
      }
      if (b.resample) {
        x = b.resample_conv(x);
        skips.push_back(x);
      }
    }
    x = run(m.mid_first, x);
    x = m.mid.resnets[1](x, temb);
    k = 0;
    for (const Block& b : m.up) {
      for (size_t l = 0; l < b.resnets.size(); ++l) {
        x = at::cat({x, skips.back()}, 1);
        skips.pop_back();
        x = run(m.up_layers[k++], x);
      }
      if (b.resample) {
        x = at::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2});
        x = b.resample_conv(x);
      }
    }
    return m.conv_out(at::silu(m.norm_out(x)));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("UNet forward: ", (getenv("DD_TORCH_BACKTRACE") ? e.what() : e.what_without_backtrace())));
  }
}

}  // namespace dd::model
