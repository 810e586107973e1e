// sample: text to image with a Stable Diffusion folder in diffusers layout.
//
//   bazel run //trainer:sample -- --model_dir=D --prompt="a red circle"
//       --negative_prompt="" --steps=30 --guidance=7.5 --seed=1
//       --width=512 --height=512 --out=x.png
#include <gflags/gflags.h>
#include <glog/logging.h>

#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/image/image_codec.h"
#include "common/init/init.h"
#include "common/io/file_util.h"
#include "common/progress/progress_line.h"
#include "common/status/status_macros.h"
#include "trainer/model/diffusers_model.h"
#include "trainer/model/model_source.h"
#include "trainer/model/lora.h"
#include "trainer/pipeline/txt2img.h"

DEFINE_string(model_dir, "", "A diffusers model folder (model_index.json, unet/, vae/, ...), a "
                             "single-file .safetensors (with --model_config), or a Hugging Face Hub "
                             "name org/name[@revision].");
DEFINE_string(model_config, "", "With a single-file --model_dir (a .safetensors in the original "
                                "layout): a diffusers folder or Hub name of its family for configs, "
                                "tokenizers and scheduler.");
DEFINE_string(hf_token_file, "", "The Hub token for private or gated models (default: HF_TOKEN, "
                                 "then $HF_HOME/token).");
DEFINE_string(hf_variant, "", "A Hub model's weights variant to fetch (e.g. fp16).");
DEFINE_string(prompt, "", "What to draw.");
DEFINE_string(negative_prompt, "", "What to steer away from (classifier-free guidance).");
DEFINE_int32(steps, 30, "Denoising steps.");
DEFINE_double(guidance, 7.5, "Classifier-free guidance scale; <= 1 turns guidance off.");
DEFINE_uint64(seed, 0, "Seed of the initial noise (torch.manual_seed compatible).");
DEFINE_int32(width, 0, "Image width (0: the model's native size).");
DEFINE_int32(height, 0, "Image height (0: the model's native size).");
DEFINE_string(sampler, "", "ddim or euler (default: the model folder's scheduler).");
DEFINE_string(out, "sample.png", "Where to write the PNG.");
DEFINE_string(lora, "", "A LoRA file (kohya/A1111 or diffusers/PEFT keys) applied to the UNet "
                        "(default: the model folder's pytorch_lora_weights.safetensors, which a "
                        "LoRA run's checkpoints hold; \"none\": not even that).");
DEFINE_double(lora_scale, 1.0, "How strongly the LoRA applies (its alpha/rank times this).");

namespace {

absl::Status Run(int, char**) {
  if (FLAGS_model_dir.empty()) return absl::InvalidArgumentError("--model_dir is required");
  ASSIGN_OR_RETURN(const std::string model_dir,
                   dd::model::ResolveModel({FLAGS_model_dir, FLAGS_model_config, FLAGS_hf_token_file,
                                            FLAGS_hf_variant}));
  ASSIGN_OR_RETURN(auto model, dd::model::DiffusersModel::Load(model_dir));
  std::string lora = FLAGS_lora;
  if (lora.empty() && std::filesystem::exists(model_dir + "/" + dd::model::kLoraFile)) {
    lora = model_dir + "/" + dd::model::kLoraFile;
  }
  if (!lora.empty() && lora != "none") {
    ASSIGN_OR_RETURN(int layers,
                     dd::model::LoadLora(lora,
                                         dd::model::LoraModules(model->unet.get(), model->text_encoder.get(),
                                                                model->text_encoder_2.get()),
                                         FLAGS_lora_scale));
    std::cerr << "LoRA " << lora << " on " << layers << " layers, scale " << FLAGS_lora_scale << "\n";
  }
  ASSIGN_OR_RETURN(auto pipe, dd::pipeline::Txt2ImgPipeline::Create(model.get()));
  dd::ProgressLine progress("sampling", FLAGS_steps, "steps", absl::Seconds(1));
  dd::pipeline::Txt2ImgOptions o;
  o.prompt = FLAGS_prompt;
  o.negative_prompt = FLAGS_negative_prompt;
  o.steps = FLAGS_steps;
  o.guidance = FLAGS_guidance;
  o.seed = FLAGS_seed;
  o.width = FLAGS_width;
  o.height = FLAGS_height;
  o.sampler = FLAGS_sampler;
  o.on_step = [&](int step, int) { progress.Update(step); };
  ASSIGN_OR_RETURN(at::Tensor image, pipe.Generate(o));
  progress.Finish();
  ASSIGN_OR_RETURN(dd::RgbImage rgb, dd::pipeline::ToRgbImage(image));
  ASSIGN_OR_RETURN(std::string png, dd::EncodePng(rgb));
  RETURN_IF_ERROR(dd::WriteFileAtomically(FLAGS_out, png));
  std::cout << "wrote " << FLAGS_out << " (" << rgb.width << "x" << rgb.height << ")\n";
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  return dd::RunMain("sample --model_dir=D --prompt=TEXT --out=x.png", argc, argv, Run);
}
