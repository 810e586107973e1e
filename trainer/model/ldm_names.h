// The names of the original Stable Diffusion checkpoint layout (CompVis'
// LDM code, which AUTOMATIC1111, ComfyUI and the model sites' single
// .safetensors files use) against diffusers' names, both ways:
//   UNet    model.diffusion_model.{time_embed, label_emb, input_blocks,
//           middle_block, output_blocks, out}
//   VAE     first_stage_model.{encoder.down.N.block.M, mid.block_1, mid.attn_1,
//           decoder.up.N (reversed), norm_out, nin_shortcut}
//   text    cond_stage_model.transformer.text_model.* (SD 1.x, CLIP ViT-L in
//           transformers' names), cond_stage_model.model.* (SD 2.x, OpenCLIP:
//           transformer.resblocks.N.{ln_1, attn.in_proj_*, mlp.c_fc, ...}),
//           conditioner.embedders.{0.transformer, 1.model}.* (SDXL)
// The block numbering follows from the UNet's config (layers per block,
// which blocks have attention), as the public conversion scripts derive it.
// Pure string logic: no libtorch; the tensors that change shape (the VAE's
// 1x1-conv attention, OpenCLIP's fused q/k/v, SDXL's transposed projection)
// are the caller's (single_file.h).
#ifndef TRAINER_MODEL_LDM_NAMES_H_
#define TRAINER_MODEL_LDM_NAMES_H_

#include <optional>
#include <string>
#include <vector>

namespace dd::model {

// What decides a UNet's LDM numbering.
struct UNetLayout {
  int layers_per_block = 2;
  std::vector<bool> down_has_attention;  // per down block
  std::vector<bool> up_has_attention;    // per up block
};

// A diffusers UNet name (e.g. "down_blocks.1.resnets.0.norm1.weight") as the
// LDM name under model.diffusion_model. (e.g. "input_blocks.4.0.in_layers.0.weight");
// nullopt for a name outside the layout.
std::optional<std::string> UNetNameToLdm(const UNetLayout& layout, const std::string& name);
// The inverse (the name without "model.diffusion_model.").
std::optional<std::string> UNetNameFromLdm(const UNetLayout& layout, const std::string& ldm);

// VAE names: `num_blocks` is the length of block_out_channels (the decoder's
// up blocks are numbered in reverse in LDM).
std::optional<std::string> VaeNameToLdm(int num_blocks, const std::string& name);
std::optional<std::string> VaeNameFromLdm(int num_blocks, const std::string& ldm);

// OpenCLIP text-encoder names against transformers' CLIPTextModel names
// without the "text_model." prefix ("encoder.layers.3.mlp.fc1.weight" <->
// "transformer.resblocks.3.mlp.c_fc.weight"). The fused attention input
// ("attn.in_proj_weight"/"_bias") maps to "self_attn.qkv_proj.weight"/"bias",
// which the caller splits into q_proj, k_proj, v_proj; "text_projection"
// maps to "text_projection.weight" (transposed by the caller).
std::optional<std::string> OpenClipNameToHf(const std::string& open_clip);
std::optional<std::string> OpenClipNameFromHf(const std::string& hf);

}  // namespace dd::model

#endif  // TRAINER_MODEL_LDM_NAMES_H_
