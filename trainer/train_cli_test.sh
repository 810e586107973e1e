#!/usr/bin/env bash
# The training command line end to end, with real processes and files:
# init_model writes a tiny model, make_shapes_dataset a captioned dataset,
# train trains it, checkpoints, samples, logs, resumes, and refuses bad
# folders with a message naming them.
set -euo pipefail
R="$TEST_SRCDIR/$TEST_WORKSPACE"
T="$TEST_TMPDIR"
fail() { echo "FAIL: $*"; exit 1; }

"$R/trainer/tools/init_model" --size=tiny --out="$T/model" --seed=1
"$R/trainer/tools/make_shapes_dataset" --out_dir="$T/data" --num_samples=24 --width=64 --height=64 \
  --image_format=mixed 2>/dev/null

"$R/trainer/train" --model_dir="$T/model" --dataset_dir="$T/data" --output_dir="$T/out" \
  --batch_size=4 --resolution=64 --max_steps=6 --save_steps=3 --image_log_steps=6 \
  --sample_steps=2 --lr=1e-3 --seed=2 2>"$T/log1" || { cat "$T/log1"; fail "train failed"; }
grep -q "training: 6/6 steps" "$T/log1" || { cat "$T/log1"; fail "no final progress line"; }
grep -q "img/s" "$T/log1" || fail "progress line lacks the rate"
for f in checkpoint-3/training_state.safetensors checkpoint-6/unet/diffusion_pytorch_model.safetensors \
         checkpoint-6/vae/diffusion_pytorch_model.safetensors checkpoint-6/model_index.json \
         samples/step-000006.png metrics.jsonl; do
  [ -s "$T/out/$f" ] || fail "missing $f"
done
[ "$(wc -l < "$T/out/metrics.jsonl")" -eq 6 ] || fail "metrics.jsonl should have 6 lines"
ls "$T/out/logs"/events.out.tfevents.* >/dev/null || fail "no TensorBoard event file"

# Resume from the newest checkpoint and go on to step 8.
"$R/trainer/train" --model_dir="$T/model" --dataset_dir="$T/data" --output_dir="$T/out" \
  --batch_size=4 --resolution=64 --max_steps=8 --save_steps=4 --lr=1e-3 --seed=2 \
  --resume_from=latest 2>"$T/log2" || { cat "$T/log2"; fail "resume failed"; }
grep -q "resumed from .*checkpoint-6 at step 6" "$T/log2" || { cat "$T/log2"; fail "did not resume"; }
[ -d "$T/out/checkpoint-8" ] || fail "no checkpoint-8"
# The trained model folder is a model folder: training can start from it.
"$R/trainer/train" --model_dir="$T/out/checkpoint-8" --dataset_dir="$T/data" \
  --output_dir="$T/out2" --batch_size=2 --resolution=64 --max_steps=1 2>/dev/null \
  || fail "cannot train from a checkpoint folder"

expect_error() {  # expect_error <text> <args...>
  local want="$1"; shift
  if "$R/trainer/train" "$@" 2>"$T/err"; then fail "expected failure for $*"; fi
  grep -q "$want" "$T/err" || { cat "$T/err"; fail "error does not say \"$want\""; }
}
mkdir -p "$T/empty"
expect_error "model folder /nonexistent" --model_dir=/nonexistent --dataset_dir="$T/data" --output_dir="$T/o3"
expect_error "dataset $T/empty" --model_dir="$T/model" --dataset_dir="$T/empty" --output_dir="$T/o4"
expect_error "output directory" --model_dir="$T/model" --dataset_dir="$T/data" --output_dir=/proc/x
expect_error "mixed_precision=fp16 needs a CUDA GPU" --model_dir="$T/model" --dataset_dir="$T/data" --output_dir="$T/o5" --mixed_precision=fp16
# Gradient checkpointing and 8-bit Adam with EMA run too.
"$R/trainer/train" --model_dir="$T/model" --dataset_dir="$T/data" --output_dir="$T/o6" --batch_size=2 \
  --resolution=64 --max_steps=2 --gradient_checkpointing --use_8bit_adam --use_ema 2>/dev/null \
  || fail "gradient checkpointing run failed"
[ -d "$T/o6/checkpoint-2/unet_ema" ] || fail "no unet_ema with --use_ema"
echo PASS
