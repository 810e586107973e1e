#include "trainer/model/model_init.h"

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/io/file_util.h"
#include "common/status/status_macros.h"
#include "trainer/model/torch_tensors.h"
#include "trainer/model/unet.h"
#include "trainer/model/vae.h"

namespace dd::model {
namespace {

using json = nlohmann::json;

struct Size {
  json unet, vae, text;
  json text_2;  // SDXL: the second encoder (CLIPTextModelWithProjection); null otherwise
};

json UNetJson(std::vector<int> channels, int layers, int cross_dim, int heads, int groups,
              int sample_size) {
  std::vector<std::string> down, up;
  for (size_t i = 0; i < channels.size(); ++i) {
    down.push_back(i + 1 < channels.size() ? "CrossAttnDownBlock2D" : "DownBlock2D");
    up.push_back(i == 0 ? "UpBlock2D" : "CrossAttnUpBlock2D");
  }
  return json{{"_class_name", "UNet2DConditionModel"},
              {"_diffusers_version", "0.30.0"},
              {"act_fn", "silu"},
              {"attention_head_dim", heads},
              {"block_out_channels", channels},
              {"center_input_sample", false},
              {"cross_attention_dim", cross_dim},
              {"down_block_types", down},
              {"downsample_padding", 1},
              {"flip_sin_to_cos", true},
              {"freq_shift", 0},
              {"in_channels", 4},
              {"layers_per_block", layers},
              {"mid_block_scale_factor", 1},
              {"norm_eps", 1e-5},
              {"norm_num_groups", groups},
              {"out_channels", 4},
              {"sample_size", sample_size},
              {"up_block_types", up},
              {"use_linear_projection", false}};
}

json VaeJson(std::vector<int> channels, int layers, int groups, int sample_size) {
  std::vector<std::string> down(channels.size(), "DownEncoderBlock2D");
  std::vector<std::string> up(channels.size(), "UpDecoderBlock2D");
  return json{{"_class_name", "AutoencoderKL"},
              {"_diffusers_version", "0.30.0"},
              {"act_fn", "silu"},
              {"block_out_channels", channels},
              {"down_block_types", down},
              {"up_block_types", up},
              {"in_channels", 3},
              {"out_channels", 3},
              {"latent_channels", 4},
              {"layers_per_block", layers},
              {"norm_num_groups", groups},
              {"sample_size", sample_size},
              {"scaling_factor", 0.18215}};
}

json TextJson(int hidden, int layers, int heads, int intermediate) {
  return json{{"architectures", {"CLIPTextModel"}},
              {"model_type", "clip_text_model"},
              {"hidden_act", "quick_gelu"},
              {"hidden_size", hidden},
              {"intermediate_size", intermediate},
              {"layer_norm_eps", 1e-5},
              {"max_position_embeddings", 77},
              {"num_attention_heads", heads},
              {"num_hidden_layers", layers},
              {"projection_dim", hidden}};
}

// An SDXL-shaped UNet (diffusers' SDXL layout at toy widths): a first block
// without attention, linear projections, two transformer layers in the
// deepest block, and the text_time embedding of the pooled text embedding
// and the six micro-conditioning numbers.
json SdxlUNetJson(std::vector<int> channels, int cross_dim, int heads, int groups, int sample_size,
                  int time_embed_dim, int pooled_dim) {
  json j = UNetJson(channels, 2, cross_dim, heads, groups, sample_size);
  std::vector<std::string> down, up;
  std::vector<int> transformer_layers;
  for (size_t i = 0; i < channels.size(); ++i) {
    down.push_back(i == 0 ? "DownBlock2D" : "CrossAttnDownBlock2D");
    up.push_back(i + 1 == channels.size() ? "UpBlock2D" : "CrossAttnUpBlock2D");
    transformer_layers.push_back(i == 0 ? 1 : static_cast<int>(i));
  }
  j["down_block_types"] = down;
  j["up_block_types"] = up;
  j["transformer_layers_per_block"] = transformer_layers;
  j["use_linear_projection"] = true;
  j["addition_embed_type"] = "text_time";
  j["addition_time_embed_dim"] = time_embed_dim;
  j["projection_class_embeddings_input_dim"] = 6 * time_embed_dim + pooled_dim;
  return j;
}

absl::StatusOr<Size> SizeNamed(const std::string& name) {
  if (name == "tiny-sdxl") {
    // Encoders of 32 and 64 wide: cross attention over their 96-wide
    // concatenation, the second's pooled output projected to 32.
    Size s{SdxlUNetJson({32, 64, 64}, 96, 4, 8, 16, 8, 32), VaeJson({32, 64, 64}, 1, 8, 64),
           TextJson(32, 2, 4, 64), TextJson(64, 2, 4, 128)};
    s.text_2["architectures"] = {"CLIPTextModelWithProjection"};
    s.text_2["hidden_act"] = "gelu";
    s.text_2["projection_dim"] = 32;
    return s;
  }
  if (name == "tiny") {
    return Size{UNetJson({32, 64, 64}, 1, 64, 4, 8, 16), VaeJson({32, 64, 64}, 1, 8, 64),
                TextJson(64, 2, 4, 128)};
  }
  if (name == "small") {
    return Size{UNetJson({64, 128, 256}, 2, 256, 8, 32, 32), VaeJson({64, 128, 128, 128}, 1, 32, 256),
                TextJson(256, 4, 4, 1024)};
  }
  if (name == "sd15") {
    return Size{UNetJson({320, 640, 1280, 1280}, 2, 768, 8, 32, 64),
                VaeJson({128, 256, 512, 512}, 2, 32, 512), TextJson(768, 12, 12, 3072)};
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown model size \"", name, "\" (tiny, small, sd15, tiny-sdxl)"));
}

// The byte-to-unicode table of GPT-2/CLIP BPE: printable bytes map to
// themselves, the rest to code points from 256 up.
std::vector<std::string> ByteAlphabet() {
  auto utf8 = [](int cp) {
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      s += static_cast<char>(0xE0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return s;
  };
  std::vector<std::string> out(256);
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    out[b] = utf8(printable ? b : next++);
  }
  return out;
}

// `pad` is the pad token: SD 1.x pads with <|endoftext|>, SDXL's second
// tokenizer with "!".
absl::Status WriteTokenizer(const std::string& dir, const std::vector<std::string>& words,
                            int* vocab_size, const std::string& pad = "<|endoftext|>") {
  std::vector<std::string> alphabet = ByteAlphabet();
  json vocab = json::object();
  int id = 0;
  for (const auto& a : alphabet) vocab[a] = id++;
  for (const auto& a : alphabet) vocab[a + "</w>"] = id++;
  std::string merges = "#version: 0.2\n";
  std::set<std::string> merged;
  for (const std::string& raw : words) {
    std::string word;
    for (unsigned char c : raw) word += alphabet[c];
    // Symbols of the word (UTF-8 aware), the last one with </w>.
    std::vector<std::string> symbols;
    for (size_t i = 0; i < word.size();) {
      size_t len = (static_cast<unsigned char>(word[i]) < 0x80) ? 1 : (static_cast<unsigned char>(word[i]) < 0xE0 ? 2 : 3);
      symbols.push_back(word.substr(i, len));
      i += len;
    }
    if (symbols.size() < 2) continue;
    symbols.back() += "</w>";
    std::string left = symbols[0];
    for (size_t i = 1; i < symbols.size(); ++i) {
      std::string joined = left + symbols[i];
      if (merged.insert(joined).second) {
        merges += left + " " + symbols[i] + "\n";
        if (!vocab.contains(joined)) vocab[joined] = id++;
      }
      left = joined;
    }
  }
  vocab["<|startoftext|>"] = id++;
  vocab["<|endoftext|>"] = id++;
  *vocab_size = id;
  json config = {{"bos_token", "<|startoftext|>"}, {"eos_token", "<|endoftext|>"},
                 {"pad_token", pad},               {"unk_token", "<|endoftext|>"},
                 {"model_max_length", 77},         {"do_lower_case", true},
                 {"tokenizer_class", "CLIPTokenizer"}};
  RETURN_IF_ERROR(WriteFileAtomically(dir + "/vocab.json", vocab.dump()));
  RETURN_IF_ERROR(WriteFileAtomically(dir + "/merges.txt", merges));
  return WriteFileAtomically(dir + "/tokenizer_config.json", config.dump(2));
}

// PyTorch's default initialisation, chosen by the parameter's name and
// shape. `fan_in` of a bias is that of its weight.
at::Tensor Initial(const std::string& name, const std::vector<int64_t>& shape,
                   const std::map<std::string, int64_t>& fan_in, at::Generator& gen) {
  const bool is_norm = absl::StrContains(name, "norm") || absl::StrContains(name, "layer_norm");
  const bool is_bias = absl::EndsWith(name, ".bias");
  if (absl::StrContains(name, "embedding.weight") && shape.size() == 2 &&
      absl::StrContains(name, "embeddings.")) {
    return at::randn(shape, gen) * 0.02;  // CLIP token and position embeddings
  }
  if (is_norm && shape.size() == 1) return is_bias ? at::zeros(shape) : at::ones(shape);
  std::string stem = name.substr(0, name.rfind('.'));
  auto it = fan_in.find(stem);
  int64_t fan = it != fan_in.end() ? it->second : 1;
  double bound = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(fan, 1)));
  return (at::rand(shape, gen) * 2 - 1) * bound;
}

absl::Status WritePart(const std::string& path,
                       const std::vector<std::pair<std::string, std::vector<int64_t>>>& shapes,
                       at::Generator& gen) {
  std::map<std::string, int64_t> fan_in;
  for (const auto& [name, shape] : shapes) {
    if (absl::EndsWith(name, ".weight") && shape.size() >= 2) {
      int64_t fan = 1;
      for (size_t i = 1; i < shape.size(); ++i) fan *= shape[i];
      fan_in[name.substr(0, name.size() - 7)] = fan;
    }
  }
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, shape] : shapes) tensors[name] = Initial(name, shape, fan_in, gen);
  return SaveTensors(path, tensors, {{"format", "pt"}});
}

}  // namespace

std::vector<std::string> ModelSizes() { return {"tiny", "small", "sd15", "tiny-sdxl"}; }

absl::StatusOr<std::string> UNetConfigJson(const std::string& size_name) {
  ASSIGN_OR_RETURN(Size size, SizeNamed(size_name));
  return size.unet.dump(2);
}

absl::Status WriteInitialModel(const std::string& dir, const std::string& size_name, uint64_t seed,
                               const std::vector<std::string>& words,
                               const std::string& prediction_type) {
  if (prediction_type != "epsilon" && prediction_type != "v_prediction") {
    return absl::InvalidArgumentError(
        absl::StrCat("prediction_type \"", prediction_type, "\": use epsilon or v_prediction"));
  }
  ASSIGN_OR_RETURN(Size size, SizeNamed(size_name));
  std::error_code ec;
  for (const char* part : {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}) {
    std::filesystem::create_directories(std::filesystem::path(dir) / part, ec);
    if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, "/", part));
  }
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  try {
    // UNet: the parameter list of a randomly built one names every weight.
    ASSIGN_OR_RETURN(UNetConfig uc, ParseUNetConfig(size.unet.dump(), "unet config"));
    ASSIGN_OR_RETURN(auto unet, UNet::Random(uc, seed));
    std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
    for (const auto& p : unet->parameters()) shapes.push_back({p.name, p.value.sizes().vec()});
    RETURN_IF_ERROR(WriteFileAtomically(dir + "/unet/config.json", size.unet.dump(2)));
    RETURN_IF_ERROR(WritePart(dir + "/unet/diffusion_pytorch_model.safetensors", shapes, gen));

    ASSIGN_OR_RETURN(VaeConfig vc, ParseVaeConfig(size.vae.dump(), "vae config"));
    ASSIGN_OR_RETURN(auto vae_shapes, AutoencoderKL::ParameterShapes(vc));
    shapes.clear();
    for (const auto& p : vae_shapes) shapes.push_back({p.name, p.shape});
    RETURN_IF_ERROR(WriteFileAtomically(dir + "/vae/config.json", size.vae.dump(2)));
    RETURN_IF_ERROR(WritePart(dir + "/vae/diffusion_pytorch_model.safetensors", shapes, gen));

    // One tokenizer and text encoder (SDXL: two).
    auto write_text = [&](const std::string& tokenizer_dir, const std::string& encoder_dir, json text,
                          const std::string& pad) -> absl::Status {
    int vocab_size = 0;
    RETURN_IF_ERROR(WriteTokenizer(tokenizer_dir, words, &vocab_size, pad));
    text["vocab_size"] = vocab_size;
    text["bos_token_id"] = vocab_size - 2;
    text["eos_token_id"] = vocab_size - 1;
    text["pad_token_id"] = vocab_size - 1;
    const int64_t h = text["hidden_size"], f = text["intermediate_size"];
    shapes = {{"text_model.embeddings.token_embedding.weight", {vocab_size, h}},
              {"text_model.embeddings.position_embedding.weight", {77, h}},
              {"text_model.final_layer_norm.weight", {h}},
              {"text_model.final_layer_norm.bias", {h}}};
    for (int i = 0; i < text["num_hidden_layers"].get<int>(); ++i) {
      std::string p = absl::StrCat("text_model.encoder.layers.", i, ".");
      for (const char* ln : {"layer_norm1", "layer_norm2"}) {
        shapes.push_back({p + ln + ".weight", {h}});
        shapes.push_back({p + ln + ".bias", {h}});
      }
      for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
        shapes.push_back({p + "self_attn." + proj + ".weight", {h, h}});
        shapes.push_back({p + "self_attn." + proj + ".bias", {h}});
      }
      shapes.push_back({p + "mlp.fc1.weight", {f, h}});
      shapes.push_back({p + "mlp.fc1.bias", {f}});
      shapes.push_back({p + "mlp.fc2.weight", {h, f}});
      shapes.push_back({p + "mlp.fc2.bias", {h}});
    }
    if (text.contains("architectures") && text["architectures"][0] == "CLIPTextModelWithProjection") {
      shapes.push_back({"text_projection.weight", {text["projection_dim"].get<int64_t>(), h}});
    }
    RETURN_IF_ERROR(WriteFileAtomically(encoder_dir + "/config.json", text.dump(2)));
    return WritePart(encoder_dir + "/model.safetensors", shapes, gen);
    };
    RETURN_IF_ERROR(write_text(dir + "/tokenizer", dir + "/text_encoder", size.text, "<|endoftext|>"));
    if (!size.text_2.is_null()) {
      for (const char* part : {"text_encoder_2", "tokenizer_2"}) {
        std::filesystem::create_directories(std::filesystem::path(dir) / part, ec);
      }
      RETURN_IF_ERROR(write_text(dir + "/tokenizer_2", dir + "/text_encoder_2", size.text_2, "!"));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("initialising the model: ", e.what_without_backtrace()));
  }
  json scheduler = {{"_class_name", "DDIMScheduler"}, {"beta_schedule", "scaled_linear"},
                    {"beta_start", 0.00085},          {"beta_end", 0.012},
                    {"num_train_timesteps", 1000},     {"prediction_type", prediction_type},
                    {"set_alpha_to_one", false},       {"steps_offset", 1},
                    {"clip_sample", false},            {"timestep_spacing", "leading"}};
  RETURN_IF_ERROR(WriteFileAtomically(dir + "/scheduler/scheduler_config.json", scheduler.dump(2)));
  const bool sdxl = !size.text_2.is_null();
  json index = {{"_class_name", sdxl ? "StableDiffusionXLPipeline" : "StableDiffusionPipeline"},
                {"_diffusers_version", "0.30.0"},
                {"scheduler", {"diffusers", "DDIMScheduler"}},
                {"text_encoder", {"transformers", "CLIPTextModel"}},
                {"tokenizer", {"transformers", "CLIPTokenizer"}},
                {"unet", {"diffusers", "UNet2DConditionModel"}},
                {"vae", {"diffusers", "AutoencoderKL"}},
                {"safety_checker", {nullptr, nullptr}},
                {"feature_extractor", {nullptr, nullptr}},
                {"requires_safety_checker", false}};
  if (sdxl) {
    index.erase("safety_checker");
    index.erase("feature_extractor");
    index.erase("requires_safety_checker");
    index["text_encoder_2"] = {"transformers", "CLIPTextModelWithProjection"};
    index["tokenizer_2"] = {"transformers", "CLIPTokenizer"};
    index["force_zeros_for_empty_prompt"] = true;
  }
  return WriteFileAtomically(dir + "/model_index.json", index.dump(2));
}

}  // namespace dd::model
