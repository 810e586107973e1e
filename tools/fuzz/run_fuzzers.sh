#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (-fsanitize=fuzzer,address) and runs
# each for a bounded number of inputs. Bazel's toolchain here is gcc, so the
# targets are compiled directly; the same entry points also run as ordinary
# Bazel tests on generated inputs (e.g. //trainer/averaging:codec_fuzz_test).
#
#   tools/fuzz/run_fuzzers.sh [RUNS]      (default 200000 inputs per target)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-200000}"
out="${FUZZ_OUT:-/tmp/dd-fuzz}"
mkdir -p "$out"
CXX="${CXX:-clang++-14}"
absl=$(pkg-config --libs absl_status absl_strings absl_statusor 2>/dev/null || echo "-labsl_status -labsl_strings")

build() {  # name, sources...
  local name=$1; shift
  "$CXX" -std=c++17 -O1 -g -fsanitize=fuzzer,address -I. "$@" $absl -o "$out/$name"
}

targets=()
codecs=(none fp16 bf16 uniform8bit blockwise8bit topk8bit)
for id in "${!codecs[@]}"; do
  name="codec_${codecs[$id]}_decode_fuzz"
  build "$name" -DDD_FUZZ_CODEC="$id" trainer/averaging/codec_fuzz.cc trainer/averaging/codec.cc \
    common/thread/parallel_for.cc
  targets+=("$name")
done
build safetensors_fuzz trainer/model/safetensors_fuzz.cc trainer/model/safetensors.cc \
  common/io/file_util.cc
targets+=(safetensors_fuzz)
for target in "${targets[@]}"; do
  echo "== $target: $runs inputs"
  mkdir -p "$out/$target.corpus"
  "$out/$target" -runs="$runs" -max_len=70000 "$out/$target.corpus" 2>&1 | tail -3
done
