#!/usr/bin/env bash
# Everything issue 16 measures on the GPU machine, in one call that leaves
# its results under $OUT (a device run; well under 10 minutes on 16 cores):
#   1. builds train, sample, parity and the benches from the bundle
#      (tools/gpu/build_from_bundle.sh) against the machine's CUDA libtorch;
#   2. the parity tool on the fixture with the text encoder, UNet and VAE on
#      the GPU: fp32 held to 1e-4, bf16 autocast reported;
#   3. trains the fixture model on the GPU in bf16 and in fp16 with loss
#      scaling, checkpoints, resumes, and checks the resumed run equals the
#      straight one (the final checkpoints' UNet weights, byte for byte);
#   4. the data path: the loader's images/s at 512 px (data_loader_bench),
#      to set against the step rate of 5;
#   5. the SD 1.5 UNet training step at batch 8 and 32 (unet_step_bench),
#      beside diffusers' figures on the same card, then batch 32 with
#      gradient checkpointing.
# Here first: tools/gpu/make_bundle.sh, and the fixtures copied in (a device
# run carries only the working tree):
#   mkdir -p out/fixtures && cp -r ../shared/fixtures/tiny-sd1 out/fixtures/
#   run: tools/gpu/device_run.sh   carry: ["out/gpu-bundle.tar.gz", "out/fixtures"]
# On a CPU (to check the script): DEVICE=cpu PRECISIONS=no SKIP_BENCH=1 LIBTORCH=...
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out/device-run}
DEVICE=${DEVICE:-cuda}
PRECISIONS=${PRECISIONS:-"bf16 fp16"}
FIXTURES=${FIXTURES:-out/fixtures}
mkdir -p "$OUT"
exec > >(tee "$OUT/device_run.log") 2>&1
status=0
step() { echo; echo "== $*"; }
check() { if "$@"; then echo "ok: $*"; else echo "FAILED: $*"; status=1; fi; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
echo "$(nproc) cores"

step "build from the bundle"
start=$(date +%s)
bins=$(tools/gpu/build_from_bundle.sh out/gpu-bundle.tar.gz) || { echo "build failed"; exit 1; }
echo "$bins"
echo "built in $(( $(date +%s) - start )) s"
bin_of() { grep "/$1\$" <<< "$bins" | head -1; }
train=$(bin_of train)

step "parity on $DEVICE (fp32: relative error <= 1e-4)"
parity_args=(--model_dir="$FIXTURES/tiny-sd1/model" --reference_dir="$FIXTURES/tiny-sd1/reference"
             --device="$DEVICE")
check "$(bin_of parity)" "${parity_args[@]}"
step "parity on $DEVICE with bf16 autocast (reported; tolerance 5e-2)"
"$(bin_of parity)" "${parity_args[@]}" --mixed_precision=bf16 --tolerance=5e-2 || true

step "training the fixture model on $DEVICE"
data="$OUT/shapes"
check "$(bin_of make_shapes_dataset)" --out_dir="$data" --num_samples=32 --width=64 --height=64
model="$FIXTURES/tiny-sd1/model"
# Exact resumption on a GPU needs deterministic kernels (cuBLAS too).
export CUBLAS_WORKSPACE_CONFIG=:4096:8
for precision in $PRECISIONS; do
  common=(--model_dir="$model" --dataset_dir="$data" --resolution=32 --batch_size=4
          --max_steps=8 --save_steps=4 --lr=1e-3 --seed=3 --device="$DEVICE"
          --mixed_precision="$precision" --deterministic)
  check "$train" "${common[@]}" --output_dir="$OUT/train-$precision-straight"
  check "$train" "${common[@]}" --max_steps=4 --output_dir="$OUT/train-$precision-split"
  check "$train" "${common[@]}" --resume_from=latest --output_dir="$OUT/train-$precision-split"
  a="$OUT/train-$precision-straight/checkpoint-8/unet/diffusion_pytorch_model.safetensors"
  b="$OUT/train-$precision-split/checkpoint-8/unet/diffusion_pytorch_model.safetensors"
  if cmp -s "$a" "$b"; then
    echo "ok: $precision: the resumed run's weights equal the straight run's"
  else
    echo "FAILED: $precision: resumed weights differ from the straight run's"; status=1
  fi
  tail -1 "$OUT/train-$precision-straight/metrics.jsonl" 2>/dev/null
done

step "the data path: images/s of the loader at 512 px (data_loader_bench), against the step rate"
check "$(bin_of data_loader_bench)" --images=400 --resolution=512

if [ -z "${SKIP_BENCH:-}" ]; then
  step "SD 1.5 UNet training step, bf16 (unet_step_bench)"
  check "$(bin_of unet_step_bench)" --size=sd15 --batches=8,32 --latent=64 \
    --mixed_precision=bf16 --device="$DEVICE"
  cat <<'REF'
diffusers 0.40 + torch 2.11 on an H200 (../shared/notes/gpu.md), SD 1.5 UNet, 64x64 latents:
  bf16 autocast, AdamW (foreach), batch  8: 0.196 s/step, 40.8 img/s, peak 20.8 GiB
  bf16 autocast, AdamW (foreach), batch 32: 0.364 s/step, 87.9 img/s, peak 48.9 GiB
REF
  step "lever: gradient checkpointing at batch 32 (memory against step time)"
  check "$(bin_of unet_step_bench)" --size=sd15 --batches=32 --latent=64 \
    --mixed_precision=bf16 --device="$DEVICE" --gradient_checkpointing=true
fi
echo
[ "$status" -eq 0 ] && echo "device run: all checks passed" || echo "device run: some checks FAILED"
exit "$status"
