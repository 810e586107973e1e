// Names of the original layout against diffusers', both ways, checked on
// pairs the public conversion scripts produce for SD 1.5's layout (4 down
// blocks, the last without attention; 4 up blocks, the first without).
#include "trainer/model/ldm_names.h"

#include "gtest/gtest.h"

namespace dd::model {
namespace {

UNetLayout Sd15() {
  UNetLayout l;
  l.layers_per_block = 2;
  l.down_has_attention = {true, true, true, false};
  l.up_has_attention = {false, true, true, true};
  return l;
}

TEST(LdmNames, UNetPairsBothWays) {
  const std::pair<const char*, const char*> pairs[] = {
      {"time_embedding.linear_2.bias", "time_embed.2.bias"},
      {"add_embedding.linear_1.weight", "label_emb.0.0.weight"},
      {"conv_in.weight", "input_blocks.0.0.weight"},
      {"conv_norm_out.bias", "out.0.bias"},
      {"down_blocks.0.attentions.1.proj_in.weight", "input_blocks.2.1.proj_in.weight"},
      {"down_blocks.1.resnets.0.norm1.weight", "input_blocks.4.0.in_layers.0.weight"},
      {"down_blocks.1.resnets.0.conv_shortcut.weight", "input_blocks.4.0.skip_connection.weight"},
      {"down_blocks.2.downsamplers.0.conv.weight", "input_blocks.9.0.op.weight"},
      {"down_blocks.3.resnets.1.conv2.bias", "input_blocks.11.0.out_layers.3.bias"},
      {"mid_block.resnets.1.time_emb_proj.weight", "middle_block.2.emb_layers.1.weight"},
      {"mid_block.attentions.0.transformer_blocks.0.ff.net.2.weight",
       "middle_block.1.transformer_blocks.0.ff.net.2.weight"},
      {"up_blocks.0.resnets.2.conv1.weight", "output_blocks.2.0.in_layers.2.weight"},
      {"up_blocks.0.upsamplers.0.conv.bias", "output_blocks.2.1.conv.bias"},
      {"up_blocks.1.upsamplers.0.conv.weight", "output_blocks.5.2.conv.weight"},
      {"up_blocks.3.attentions.2.transformer_blocks.0.attn1.to_q.weight",
       "output_blocks.11.1.transformer_blocks.0.attn1.to_q.weight"},
  };
  for (const auto& [hf, ldm] : pairs) {
    EXPECT_EQ(UNetNameToLdm(Sd15(), hf).value_or("?"), ldm) << hf;
    EXPECT_EQ(UNetNameFromLdm(Sd15(), ldm).value_or("?"), hf) << ldm;
  }
  EXPECT_FALSE(UNetNameFromLdm(Sd15(), "output_blocks.1.1.conv.weight"));  // not an upsampler slot
  EXPECT_FALSE(UNetNameFromLdm(Sd15(), "input_blocks.3.1.proj_in.weight"));
  EXPECT_FALSE(UNetNameFromLdm(Sd15(), "output_blocks.99.0.in_layers.0.weight"));
  EXPECT_FALSE(UNetNameToLdm(Sd15(), "nonsense.weight"));
}

TEST(LdmNames, VaePairsBothWays) {
  const std::pair<const char*, const char*> pairs[] = {
      {"encoder.conv_in.weight", "encoder.conv_in.weight"},
      {"encoder.conv_norm_out.bias", "encoder.norm_out.bias"},
      {"encoder.down_blocks.1.resnets.0.conv_shortcut.weight", "encoder.down.1.block.0.nin_shortcut.weight"},
      {"encoder.down_blocks.2.downsamplers.0.conv.bias", "encoder.down.2.downsample.conv.bias"},
      {"encoder.mid_block.resnets.1.norm2.weight", "encoder.mid.block_2.norm2.weight"},
      {"decoder.mid_block.attentions.0.to_out.0.weight", "decoder.mid.attn_1.proj_out.weight"},
      {"decoder.mid_block.attentions.0.group_norm.bias", "decoder.mid.attn_1.norm.bias"},
      {"decoder.up_blocks.0.resnets.2.conv2.weight", "decoder.up.3.block.2.conv2.weight"},
      {"decoder.up_blocks.1.upsamplers.0.conv.weight", "decoder.up.2.upsample.conv.weight"},
      {"post_quant_conv.bias", "post_quant_conv.bias"},
  };
  for (const auto& [hf, ldm] : pairs) {
    EXPECT_EQ(VaeNameToLdm(4, hf).value_or("?"), ldm) << hf;
    EXPECT_EQ(VaeNameFromLdm(4, ldm).value_or("?"), hf) << ldm;
  }
  EXPECT_FALSE(VaeNameFromLdm(4, "decoder.up.4.block.0.conv1.weight"));
}

TEST(LdmNames, OpenClipPairsBothWays) {
  const std::pair<const char*, const char*> pairs[] = {
      {"transformer.resblocks.0.attn.in_proj_weight", "encoder.layers.0.self_attn.qkv_proj.weight"},
      {"transformer.resblocks.0.attn.in_proj_bias", "encoder.layers.0.self_attn.qkv_proj.bias"},
      {"transformer.resblocks.7.attn.out_proj.weight", "encoder.layers.7.self_attn.out_proj.weight"},
      {"transformer.resblocks.22.mlp.c_proj.bias", "encoder.layers.22.mlp.fc2.bias"},
      {"transformer.resblocks.3.ln_1.weight", "encoder.layers.3.layer_norm1.weight"},
      {"positional_embedding", "embeddings.position_embedding.weight"},
      {"token_embedding.weight", "embeddings.token_embedding.weight"},
      {"ln_final.bias", "final_layer_norm.bias"},
      {"text_projection", "text_projection.weight"},
  };
  for (const auto& [oc, hf] : pairs) {
    EXPECT_EQ(OpenClipNameToHf(oc).value_or("?"), hf) << oc;
    EXPECT_EQ(OpenClipNameFromHf(hf).value_or("?"), oc) << hf;
  }
  EXPECT_FALSE(OpenClipNameToHf("transformer.resblocks.0.attn.bogus"));
}

}  // namespace
}  // namespace dd::model
