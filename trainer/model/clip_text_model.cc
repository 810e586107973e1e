#include "trainer/model/clip_text_model.h"

#include <map>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/io/file_util.h"
#include "trainer/model/layers.h"
#include "trainer/model/torch_compat.h"
#include "trainer/model/torch_tensors.h"

namespace dd::model {
namespace {

template <typename T>
absl::Status Read(const nlohmann::json& j, const char* key, const std::string& source, T* out) {
  if (!j.contains(key)) return absl::OkStatus();  // keep the default
  try {
    *out = j[key].get<T>();
  } catch (const nlohmann::json::exception&) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": \"", key, "\" has the wrong type"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ClipTextConfig> ParseClipTextConfig(const std::string& json,
                                                   const std::string& source) {
  nlohmann::json j = nlohmann::json::parse(json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, " is not a JSON object"));
  }
  ClipTextConfig c;
  for (absl::Status s :
       {Read(j, "vocab_size", source, &c.vocab_size), Read(j, "hidden_size", source, &c.hidden_size),
        Read(j, "intermediate_size", source, &c.intermediate_size),
        Read(j, "num_attention_heads", source, &c.num_attention_heads),
        Read(j, "num_hidden_layers", source, &c.num_hidden_layers),
        Read(j, "max_position_embeddings", source, &c.max_position_embeddings),
        Read(j, "layer_norm_eps", source, &c.layer_norm_eps),
        Read(j, "hidden_act", source, &c.hidden_act),
        Read(j, "eos_token_id", source, &c.eos_token_id)}) {
    if (!s.ok()) return s;
  }
  if (j.contains("architectures") && j["architectures"].is_array()) {
    for (const auto& a : j["architectures"]) {
      if (a == "CLIPTextModelWithProjection") c.with_projection = true;
    }
  }
  if (c.with_projection) {
    if (!j.contains("projection_dim") || !j["projection_dim"].is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": CLIPTextModelWithProjection needs projection_dim"));
    }
    c.projection_dim = j["projection_dim"].get<int64_t>();
  }
  if (c.hidden_act != "quick_gelu" && c.hidden_act != "gelu") {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": hidden_act \"", c.hidden_act, "\" is not supported"));
  }
  if (c.num_attention_heads <= 0 || c.hidden_size % c.num_attention_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": hidden_size ", c.hidden_size, " is not divisible by num_attention_heads ",
        c.num_attention_heads));
  }
  return c;
}

at::Tensor ClipTextOutput::Normed(int skip) const {
  const at::Tensor& h = hidden_states[hidden_states.size() - skip];
  return at::layer_norm(h, {h.size(-1)}, final_norm_weight, final_norm_bias, eps);
}

absl::StatusOr<std::unique_ptr<ClipTextModel>> ClipTextModel::Load(const std::string& dir) {
  auto config_text = ReadFileToString(dir + "/config.json");
  if (!config_text.ok()) return config_text.status();
  auto config = ParseClipTextConfig(*config_text, dir + "/config.json");
  if (!config.ok()) return config.status();
  std::string weights = dir + "/model.safetensors";
  auto loaded = LoadPartTensors(dir, "model");
  if (!loaded.ok()) return loaded.status();
  // Names without the "text_model." prefix for the lookups below; the
  // parameters keep the names the file used, so Save writes them back alike.
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> file_names;
  for (auto& [name, t] : *loaded) {
    std::string key = absl::StartsWith(name, "text_model.") ? name.substr(11) : name;
    file_names[key] = name;
    tensors[key] = std::move(t);
  }
  const ClipTextConfig& c = *config;
  std::unique_ptr<ClipTextModel> m(new ClipTextModel());
  m->config_ = c;
  m->config_json_ = *config_text;
  WeightTable t(std::move(tensors), weights);
  const int64_t h = c.hidden_size, f = c.intermediate_size;
  m->token_embedding_ = t.Get("embeddings.token_embedding.weight", {c.vocab_size, h});
  m->position_embedding_ = t.Get("embeddings.position_embedding.weight", {c.max_position_embeddings, h});
  m->final_w_ = t.Get("final_layer_norm.weight", {h});
  m->final_b_ = t.Get("final_layer_norm.bias", {h});
  if (c.with_projection) {
    // Stored beside text_model.* (not under it) in transformers' files.
    m->projection_ = t.Get("text_projection.weight", {c.projection_dim, h});
  }
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    Layer l;
    std::string p = absl::StrCat("encoder.layers.", i, ".");
    struct Item {
      const char* name;
      std::vector<int64_t> shape;
      at::Tensor* out;
    } items[] = {
        {"layer_norm1.weight", {h}, &l.ln1_w}, {"layer_norm1.bias", {h}, &l.ln1_b},
        {"layer_norm2.weight", {h}, &l.ln2_w}, {"layer_norm2.bias", {h}, &l.ln2_b},
        {"self_attn.q_proj.weight", {h, h}, &l.q_w}, {"self_attn.q_proj.bias", {h}, &l.q_b},
        {"self_attn.k_proj.weight", {h, h}, &l.k_w}, {"self_attn.k_proj.bias", {h}, &l.k_b},
        {"self_attn.v_proj.weight", {h, h}, &l.v_w}, {"self_attn.v_proj.bias", {h}, &l.v_b},
        {"self_attn.out_proj.weight", {h, h}, &l.o_w}, {"self_attn.out_proj.bias", {h}, &l.o_b},
        {"mlp.fc1.weight", {f, h}, &l.fc1_w}, {"mlp.fc1.bias", {f}, &l.fc1_b},
        {"mlp.fc2.weight", {h, f}, &l.fc2_w}, {"mlp.fc2.bias", {h}, &l.fc2_b},
    };
    for (auto& item : items) *item.out = t.Get(p + item.name, item.shape);
    auto slot = [&](const char* name, const at::Tensor& weight) {
      auto s = std::make_shared<LoraSlot>();
      s->weight = weight;
      m->lora_slots_["text_model." + p + name] = s;
      return s;
    };
    l.q_lora = slot("self_attn.q_proj", l.q_w);
    l.k_lora = slot("self_attn.k_proj", l.k_w);
    l.v_lora = slot("self_attn.v_proj", l.v_w);
    l.o_lora = slot("self_attn.out_proj", l.o_w);
    l.fc1_lora = slot("mlp.fc1", l.fc1_w);
    l.fc2_lora = slot("mlp.fc2", l.fc2_w);
    m->layers_.push_back(std::move(l));
  }
  if (!t.status().ok()) return t.status();
  m->parameters_ = std::move(t.used_);
  for (Parameter& p : m->parameters_) p.name = file_names[p.name];
  return m;
}

absl::Status ClipTextModel::Save(const std::string& dir) const {
  return SaveDiffusersPart(dir, config_json_, "model.safetensors", parameters_);
}

absl::StatusOr<ClipTextOutput> ClipTextModel::Forward(const at::Tensor& input_ids) const {
  const ClipTextConfig& c = config_;
  if (input_ids.dim() != 2 || input_ids.scalar_type() != at::kLong) {
    return absl::InvalidArgumentError("input_ids must be an int64 tensor [batch, tokens]");
  }
  if (input_ids.size(1) > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("input_ids has ", input_ids.size(1),
                                                   " tokens, more than ",
                                                   c.max_position_embeddings));
  }
  if (input_ids.numel() > 0 &&
      (input_ids.min().item<int64_t>() < 0 || input_ids.max().item<int64_t>() >= c.vocab_size)) {
    return absl::InvalidArgumentError("input_ids holds ids outside the vocabulary");
  }
  try {
    const int64_t b = input_ids.size(0), t = input_ids.size(1), h = c.hidden_size;
    const int64_t heads = c.num_attention_heads, d = h / heads;
    ClipTextOutput out;
    at::Tensor x = at::embedding(token_embedding_, input_ids) +
                   position_embedding_.slice(0, 0, t).unsqueeze(0);
    out.hidden_states.push_back(x);
    auto split_heads = [&](const at::Tensor& y) {
      return y.view({b, t, heads, d}).transpose(1, 2);
    };
    for (const Layer& l : layers_) {
      at::Tensor n = at::layer_norm(x, {h}, l.ln1_w, l.ln1_b, c.layer_norm_eps);
      at::Tensor q = split_heads(WithLora(n, at::linear(n, l.q_w, l.q_b), l.q_lora.get()));
      at::Tensor k = split_heads(WithLora(n, at::linear(n, l.k_w, l.k_b), l.k_lora.get()));
      at::Tensor v = split_heads(WithLora(n, at::linear(n, l.v_w, l.v_b), l.v_lora.get()));
      at::Tensor a = ScaledDotProductAttention(q, k, v, /*causal=*/true);
      a = a.transpose(1, 2).reshape({b, t, h});
      x = x + WithLora(a, at::linear(a, l.o_w, l.o_b), l.o_lora.get());
      n = at::layer_norm(x, {h}, l.ln2_w, l.ln2_b, c.layer_norm_eps);
      at::Tensor m = WithLora(n, at::linear(n, l.fc1_w, l.fc1_b), l.fc1_lora.get());
      m = c.hidden_act == "quick_gelu" ? m * at::sigmoid(1.702 * m) : at::gelu(m);
      x = x + WithLora(m, at::linear(m, l.fc2_w, l.fc2_b), l.fc2_lora.get());
      out.hidden_states.push_back(x);
    }
    out.final_norm_weight = final_w_;
    out.final_norm_bias = final_b_;
    out.eps = c.layer_norm_eps;
    out.last_hidden_state = out.Normed(1);
    // Pooled: the first end-of-text token of each row (the last token when
    // a row has none).
    at::Tensor is_eos = (input_ids == c.eos_token_id).to(at::kInt);
    at::Tensor has = is_eos.amax(1) > 0;
    at::Tensor first = at::where(has, is_eos.argmax(1), at::full({b}, t - 1, input_ids.options()));
    out.pooled = out.last_hidden_state.index({at::arange(b, input_ids.options()), first});
    if (c.with_projection) out.text_embeds = at::linear(out.pooled, projection_);
    return out;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("CLIP text model: ", e.what_without_backtrace()));
  }
}

}  // namespace dd::model
