#include "trainer/model/ldm_names.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace dd::model {
namespace {

// "<prefix><int>.<rest>": the int and the rest, or nullopt.
std::optional<std::pair<int, std::string>> Indexed(absl::string_view name, absl::string_view prefix) {
  if (!absl::ConsumePrefix(&name, prefix)) return std::nullopt;
  const size_t dot = name.find('.');
  int index = 0;
  if (dot == absl::string_view::npos || !absl::SimpleAtoi(name.substr(0, dot), &index) || index < 0) {
    return std::nullopt;
  }
  return std::make_pair(index, std::string(name.substr(dot + 1)));
}

// Renames the first component of `rest` by `pairs` (from, to); `rest`
// unchanged when none applies.
std::string RenameHead(const std::string& rest,
                       const std::vector<std::pair<std::string, std::string>>& pairs) {
  for (const auto& [from, to] : pairs) {
    if (absl::StartsWith(rest, from + ".")) return to + rest.substr(from.size());
  }
  return rest;
}

std::vector<std::pair<std::string, std::string>> Swapped(
    const std::vector<std::pair<std::string, std::string>>& pairs) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [a, b] : pairs) out.push_back({b, a});
  return out;
}

// A resnet's parts: diffusers -> LDM (UNet).
const std::vector<std::pair<std::string, std::string>>& UNetResnet() {
  static const auto* pairs = new std::vector<std::pair<std::string, std::string>>{
      {"norm1", "in_layers.0"},       {"conv1", "in_layers.2"},
      {"norm2", "out_layers.0"},      {"conv2", "out_layers.3"},
      {"time_emb_proj", "emb_layers.1"}, {"conv_shortcut", "skip_connection"}};
  return *pairs;
}

// Top-level UNet names: diffusers -> LDM.
const std::vector<std::pair<std::string, std::string>>& UNetTop() {
  static const auto* pairs = new std::vector<std::pair<std::string, std::string>>{
      {"time_embedding.linear_1", "time_embed.0"}, {"time_embedding.linear_2", "time_embed.2"},
      {"add_embedding.linear_1", "label_emb.0.0"}, {"add_embedding.linear_2", "label_emb.0.2"},
      {"conv_in", "input_blocks.0.0"},           {"conv_norm_out", "out.0"},
      {"conv_out", "out.2"}};
  return *pairs;
}

// A resnet's parts: diffusers -> LDM (VAE).
const std::vector<std::pair<std::string, std::string>>& VaeResnet() {
  static const auto* pairs =
      new std::vector<std::pair<std::string, std::string>>{{"conv_shortcut", "nin_shortcut"}};
  return *pairs;
}

// The VAE's mid-block attention: diffusers -> LDM.
const std::vector<std::pair<std::string, std::string>>& VaeAttention() {
  static const auto* pairs = new std::vector<std::pair<std::string, std::string>>{
      {"group_norm", "norm"}, {"to_q", "q"}, {"to_k", "k"}, {"to_v", "v"}, {"to_out.0", "proj_out"}};
  return *pairs;
}

std::optional<std::string> Top(const std::string& name,
                               const std::vector<std::pair<std::string, std::string>>& pairs) {
  for (const auto& [from, to] : pairs) {
    if (absl::StartsWith(name, from + ".")) return to + name.substr(from.size());
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> UNetNameToLdm(const UNetLayout& l, const std::string& name) {
  if (auto top = Top(name, UNetTop())) return top;
  const int per = l.layers_per_block + 1;  // LDM slots per block
  if (auto b = Indexed(name, "down_blocks.")) {
    const auto [i, rest] = *b;
    if (auto r = Indexed(rest, "resnets.")) {
      return absl::StrCat("input_blocks.", 1 + i * per + r->first, ".0.", RenameHead(r->second, UNetResnet()));
    }
    if (auto a = Indexed(rest, "attentions.")) {
      return absl::StrCat("input_blocks.", 1 + i * per + a->first, ".1.", a->second);
    }
    if (absl::StartsWith(rest, "downsamplers.0.conv.")) {
      return absl::StrCat("input_blocks.", (i + 1) * per, ".0.op.", rest.substr(20));
    }
    return std::nullopt;
  }
  if (auto r = Indexed(name, "mid_block.resnets.")) {
    return absl::StrCat("middle_block.", 2 * r->first, ".", RenameHead(r->second, UNetResnet()));
  }
  if (absl::StartsWith(name, "mid_block.attentions.0.")) {
    return absl::StrCat("middle_block.1.", name.substr(23));
  }
  if (auto b = Indexed(name, "up_blocks.")) {
    const auto [i, rest] = *b;
    if (i >= static_cast<int>(l.up_has_attention.size())) return std::nullopt;
    if (auto r = Indexed(rest, "resnets.")) {
      return absl::StrCat("output_blocks.", i * per + r->first, ".0.", RenameHead(r->second, UNetResnet()));
    }
    if (auto a = Indexed(rest, "attentions.")) {
      return absl::StrCat("output_blocks.", i * per + a->first, ".1.", a->second);
    }
    if (absl::StartsWith(rest, "upsamplers.0.")) {
      return absl::StrCat("output_blocks.", i * per + l.layers_per_block, ".",
                          l.up_has_attention[i] ? 2 : 1, ".", rest.substr(13));
    }
  }
  return std::nullopt;
}

std::optional<std::string> UNetNameFromLdm(const UNetLayout& l, const std::string& ldm) {
  if (auto top = Top(ldm, Swapped(UNetTop()))) return top;
  const int per = l.layers_per_block + 1;
  if (auto b = Indexed(ldm, "input_blocks.")) {
    const int k = b->first - 1;
    if (k < 0) return std::nullopt;
    const int i = k / per, j = k % per;
    auto slot = Indexed(b->second, "");
    if (!slot) return std::nullopt;
    const auto [m, rest] = *slot;
    if (j == l.layers_per_block) {  // the downsampler's slot
      if (m != 0 || !absl::StartsWith(rest, "op.")) return std::nullopt;
      return absl::StrCat("down_blocks.", i, ".downsamplers.0.conv.", rest.substr(3));
    }
    if (m == 0) return absl::StrCat("down_blocks.", i, ".resnets.", j, ".", RenameHead(rest, Swapped(UNetResnet())));
    if (m == 1) return absl::StrCat("down_blocks.", i, ".attentions.", j, ".", rest);
    return std::nullopt;
  }
  if (auto b = Indexed(ldm, "middle_block.")) {
    if (b->first == 1) return absl::StrCat("mid_block.attentions.0.", b->second);
    if (b->first == 0 || b->first == 2) {
      return absl::StrCat("mid_block.resnets.", b->first / 2, ".", RenameHead(b->second, Swapped(UNetResnet())));
    }
    return std::nullopt;
  }
  if (auto b = Indexed(ldm, "output_blocks.")) {
    const int i = b->first / per, j = b->first % per;
    if (i >= static_cast<int>(l.up_has_attention.size())) return std::nullopt;
    auto slot = Indexed(b->second, "");
    if (!slot) return std::nullopt;
    const auto [m, rest] = *slot;
    if (m == 0) return absl::StrCat("up_blocks.", i, ".resnets.", j, ".", RenameHead(rest, Swapped(UNetResnet())));
    const int upsampler_slot = l.up_has_attention[i] ? 2 : 1;
    if (m == upsampler_slot && j == l.layers_per_block) {
      return absl::StrCat("up_blocks.", i, ".upsamplers.0.", rest);
    }
    if (m == 1 && l.up_has_attention[i]) return absl::StrCat("up_blocks.", i, ".attentions.", j, ".", rest);
  }
  return std::nullopt;
}

std::optional<std::string> VaeNameToLdm(int n, const std::string& name) {
  for (const char* half : {"encoder.", "decoder."}) {
    if (!absl::StartsWith(name, half)) continue;
    const std::string rest = name.substr(8);
    const bool decoder = half[0] == 'd';
    if (absl::StartsWith(rest, "conv_norm_out.")) return absl::StrCat(half, "norm_out.", rest.substr(14));
    if (absl::StartsWith(rest, "conv_in.") || absl::StartsWith(rest, "conv_out.")) return name;
    if (auto r = Indexed(rest, "mid_block.resnets.")) {
      return absl::StrCat(half, "mid.block_", r->first + 1, ".", RenameHead(r->second, VaeResnet()));
    }
    if (absl::StartsWith(rest, "mid_block.attentions.0.")) {
      return absl::StrCat(half, "mid.attn_1.", RenameHead(rest.substr(23), VaeAttention()));
    }
    auto b = Indexed(rest, decoder ? "up_blocks." : "down_blocks.");
    if (!b || b->first >= n) return std::nullopt;
    const int ldm_block = decoder ? n - 1 - b->first : b->first;
    const std::string block = absl::StrCat(half, decoder ? "up." : "down.", ldm_block, ".");
    if (auto r = Indexed(b->second, "resnets.")) {
      return absl::StrCat(block, "block.", r->first, ".", RenameHead(r->second, VaeResnet()));
    }
    const std::string sampler = decoder ? "upsamplers.0.conv." : "downsamplers.0.conv.";
    if (absl::StartsWith(b->second, sampler)) {
      return absl::StrCat(block, decoder ? "upsample.conv." : "downsample.conv.", b->second.substr(sampler.size()));
    }
    return std::nullopt;
  }
  if (absl::StartsWith(name, "quant_conv.") || absl::StartsWith(name, "post_quant_conv.")) return name;
  return std::nullopt;
}

std::optional<std::string> VaeNameFromLdm(int n, const std::string& ldm) {
  for (const char* half : {"encoder.", "decoder."}) {
    if (!absl::StartsWith(ldm, half)) continue;
    const std::string rest = ldm.substr(8);
    const bool decoder = half[0] == 'd';
    if (absl::StartsWith(rest, "norm_out.")) return absl::StrCat(half, "conv_norm_out.", rest.substr(9));
    if (absl::StartsWith(rest, "conv_in.") || absl::StartsWith(rest, "conv_out.")) return ldm;
    if (auto r = Indexed(rest, "mid.block_")) {
      if (r->first < 1 || r->first > 2) return std::nullopt;
      return absl::StrCat(half, "mid_block.resnets.", r->first - 1, ".", RenameHead(r->second, Swapped(VaeResnet())));
    }
    if (absl::StartsWith(rest, "mid.attn_1.")) {
      return absl::StrCat(half, "mid_block.attentions.0.", RenameHead(rest.substr(11), Swapped(VaeAttention())));
    }
    auto b = Indexed(rest, decoder ? "up." : "down.");
    if (!b || b->first >= n) return std::nullopt;
    const int block = decoder ? n - 1 - b->first : b->first;
    const std::string prefix = absl::StrCat(half, decoder ? "up_blocks." : "down_blocks.", block, ".");
    if (auto r = Indexed(b->second, "block.")) {
      return absl::StrCat(prefix, "resnets.", r->first, ".", RenameHead(r->second, Swapped(VaeResnet())));
    }
    const std::string sampler = decoder ? "upsample.conv." : "downsample.conv.";
    if (absl::StartsWith(b->second, sampler)) {
      return absl::StrCat(prefix, decoder ? "upsamplers.0.conv." : "downsamplers.0.conv.", b->second.substr(sampler.size()));
    }
    return std::nullopt;
  }
  if (absl::StartsWith(ldm, "quant_conv.") || absl::StartsWith(ldm, "post_quant_conv.")) return ldm;
  return std::nullopt;
}

namespace {

// OpenCLIP -> transformers, per resblock part.
const std::vector<std::pair<std::string, std::string>>& OpenClipBlock() {
  static const auto* pairs = new std::vector<std::pair<std::string, std::string>>{
      {"ln_1", "layer_norm1"},
      {"ln_2", "layer_norm2"},
      {"mlp.c_fc", "mlp.fc1"},
      {"mlp.c_proj", "mlp.fc2"},
      {"attn.out_proj", "self_attn.out_proj"},
      {"attn.in_proj_weight", "self_attn.qkv_proj.weight"},
      {"attn.in_proj_bias", "self_attn.qkv_proj.bias"}};
  return *pairs;
}

const std::vector<std::pair<std::string, std::string>>& OpenClipTop() {
  static const auto* pairs = new std::vector<std::pair<std::string, std::string>>{
      {"token_embedding.weight", "embeddings.token_embedding.weight"},
      {"positional_embedding", "embeddings.position_embedding.weight"},
      {"ln_final.weight", "final_layer_norm.weight"},
      {"ln_final.bias", "final_layer_norm.bias"},
      {"text_projection", "text_projection.weight"}};
  return *pairs;
}

}  // namespace

std::optional<std::string> OpenClipNameToHf(const std::string& oc) {
  for (const auto& [from, to] : OpenClipTop()) {
    if (oc == from) return to;
  }
  auto b = Indexed(oc, "transformer.resblocks.");
  if (!b) return std::nullopt;
  for (const auto& [from, to] : OpenClipBlock()) {
    if (b->second == from || absl::StartsWith(b->second, from + ".")) {
      return absl::StrCat("encoder.layers.", b->first, ".", to, b->second.substr(from.size()));
    }
  }
  return std::nullopt;
}

std::optional<std::string> OpenClipNameFromHf(const std::string& hf) {
  for (const auto& [from, to] : OpenClipTop()) {
    if (hf == to) return from;
  }
  auto b = Indexed(hf, "encoder.layers.");
  if (!b) return std::nullopt;
  for (const auto& [from, to] : OpenClipBlock()) {
    if (b->second == to || absl::StartsWith(b->second, to + ".")) {
      return absl::StrCat("transformer.resblocks.", b->first, ".", from, b->second.substr(to.size()));
    }
  }
  return std::nullopt;
}

}  // namespace dd::model
