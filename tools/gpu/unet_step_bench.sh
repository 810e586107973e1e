#!/usr/bin/env bash
# The UNet training-step benchmark of issue 7 on the GPU machine: builds
# trainer/training/unet_step_bench.cc and the compute core it needs with g++
# against that machine's libtorch (PyTorch 2.11's CUDA build; no Bazel
# there), then measures the SD 1.5 UNet step at batch 8 and 32 in bf16
# autocast, beside diffusers' figures on an H200 (../shared/notes/gpu.md).
#
# On this Debian machine first: tools/gpu/pack_deps.sh (Abseil and json for
# the GPU machine), then a device run carrying out/gpu-deps:
#   tools/gpu/unet_step_bench.sh
# Locally (CPU libtorch 1.13, to check the build recipe):
#   TORCH_INCLUDE=/usr/include/torch/csrc/api/include \
#   TORCH_LIB=/usr/lib/x86_64-linux-gnu DEPS=/usr SIZE=tiny BATCHES=4 LATENT=16 \
#   tools/gpu/unet_step_bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
T=/opt/torch/.venv/lib/python3.12/site-packages/torch
torch_include="${TORCH_INCLUDE:-$T/include $T/include/torch/csrc/api/include /usr/local/cuda/include}"
torch_lib="${TORCH_LIB:-$T/lib}"
deps="${DEPS:-$(pwd)/out/gpu-deps}"
deps_lib="$deps/lib"
[ -d "$deps/lib/x86_64-linux-gnu" ] && deps_lib="$deps/lib/x86_64-linux-gnu"
out="${OUT_DIR:-out/gpu-bench}"
mkdir -p "$out"

includes=(-I. -I"$deps/include")
for d in $torch_include; do includes+=(-isystem "$d"); done
libs=(-L"$deps_lib" -Wl,-rpath,"$deps_lib")
for l in "$deps_lib"/libabsl_*.so; do libs+=(-l:"$(basename "$l")"); done
libs+=(-L"$torch_lib" -Wl,-rpath,"$torch_lib" -Wl,--no-as-needed)
defines=(-D_GLIBCXX_USE_CXX11_ABI=1)
if [ -e "$torch_lib/libtorch_cuda.so" ]; then
  libs+=(-ltorch -ltorch_cuda -ltorch_cpu -lc10_cuda -lc10)
  defines+=(-DDD_WITH_CUDA)
else
  libs+=(-ltorch -ltorch_cpu -lc10)
fi
sources=(trainer/training/unet_step_bench.cc trainer/model/unet.cc trainer/model/model_init.cc
         trainer/model/vae.cc trainer/model/torch_tensors.cc trainer/model/safetensors.cc
         common/io/file_util.cc trainer/training/optimizer.cc trainer/averaging/codec.cc
         common/thread/parallel_for.cc)
echo "== building unet_step_bench ($(nproc) jobs)"
objs=()
for s in "${sources[@]}"; do
  o="$out/$(echo "$s" | tr / _).o"
  objs+=("$o")
  g++ -O2 -std=c++17 -fPIC "${defines[@]}" "${includes[@]}" -w -c "$s" -o "$o" &
  while [ "$(jobs -rp | wc -l)" -ge "$(nproc)" ]; do sleep 0.2; done
done
wait
g++ -o "$out/unet_step_bench" "${objs[@]}" "${libs[@]}" -lpthread
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; fi
size="${SIZE:-sd15}"
"$out/unet_step_bench" --size="$size" --batches="${BATCHES:-8,32}" --latent="${LATENT:-64}" \
  --mixed_precision="${MIXED_PRECISION:-bf16}" --device="${DEVICE:-auto}" | tee "$out/result.txt"
cat <<'REF'
diffusers 0.40 + torch 2.11 on an H200 (../shared/notes/gpu.md), SD 1.5 UNet, 64x64 latents:
  bf16 autocast, AdamW (foreach), batch  8: 0.196 s/step, 40.8 img/s, peak 20.8 GiB
  bf16 autocast, AdamW (foreach), batch 32: 0.364 s/step, 87.9 img/s, peak 48.9 GiB
REF
