#!/usr/bin/env bash
# Makes the small base model the local demo starts from
# (deploy/local/shapes-tiny-base): everything from this project's own tools
# on this machine's CPU, nothing downloaded.
#
#   1. init_model --size=tiny: a tiny SD 1.x folder with random weights, a
#      CLIP vocabulary of the shapes captions' words and v-prediction (with
#      epsilon, 500 steps taught the UNet to denoise but to ignore the
#      captions: at high noise an epsilon target carries almost nothing of
#      the picture's layout and colours, a v target is mostly the picture);
#   2. make_shapes_dataset: 4000 captioned 64x64 images of coloured shapes;
#   3. train --train_vae: fits the VAE (a random one carries no picture) and
#      sets scaling_factor to 1/std of its latents;
#   4. train: the UNet and the text encoder on that VAE (a random text
#      encoder barely tells "a red circle on a blue background" from "a blue
#      circle on a red background": cosine 0.994 between their hidden states;
#      training it separates them), min-SNR weighting, 10 % empty captions so
#      classifier-free guidance works;
#   5. export_model: the last checkpoint as an fp16 diffusers folder.
#
#   tools/models/make_shapes_base.sh [OUT=out/shapes-base] [UNET_STEPS=2000]
# Takes about 50 minutes on 2 cores (VAE ~13 min at 0.5 steps/s, UNet ~33 min
# at 1 step/s). The result is written to OUT/export;
# copy it to deploy/local/shapes-tiny-base to ship it.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-out/shapes-base}"
unet_steps="${2:-2000}"
bazel build //trainer/tools:init_model //trainer/tools:make_shapes_dataset //trainer:train \
  //trainer/tools:export_model 2>&1 | grep -v linux-sandbox | tail -1
bin="$(pwd)/bazel-bin"
rm -rf "$out"
mkdir -p "$out"
prompts="a red circle on a blue background|a green square on a yellow background|a blue triangle on a white background|an orange circle on a black background"

"$bin/trainer/tools/init_model" --size=tiny --seed=0 --prediction_type=v_prediction --out="$out/init"
"$bin/trainer/tools/make_shapes_dataset" --out_dir="$out/data" --num_samples=4000 \
  --width=64 --height=64 --seed=7
"$bin/trainer/train" --train_vae --model_dir="$out/init" --dataset_dir="$out/data" \
  --output_dir="$out/vae" --batch_size=16 --resolution=64 --lr=1e-3 --max_steps=400 --seed=0 \
  --dataloader_num_workers=1
"$bin/trainer/train" --model_dir="$out/vae" --dataset_dir="$out/data" --output_dir="$out/unet" \
  --batch_size=16 --resolution=64 --lr=5e-4 --lr_scheduler=constant_with_warmup \
  --lr_warmup_steps=50 --max_steps="$unet_steps" --caption_dropout=0.1 --snr_gamma=5 \
  --train_text_encoder --seed=0 \
  --save_steps=500 --checkpoints_total_limit=1 --image_log_steps=500 --sample_steps=20 \
  --sample_guidance=4 --sample_prompts="$prompts" --dataloader_num_workers=1
"$bin/trainer/tools/export_model" --from="$out/unet/checkpoint-$unet_steps" --to="$out/export" --dtype=fp16
cp "$out/unet/samples/step-$(printf %06d "$unet_steps").png" "$out/export/samples.png"
echo "base model: $out/export (samples for \"${prompts//|/\", \"}\": $out/export/samples.png)"
