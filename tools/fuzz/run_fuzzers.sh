#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (-fsanitize=fuzzer,address) and runs
# each for a bounded number of inputs. Bazel's toolchain here is gcc, so the
# targets are compiled directly; the same entry points also run as ordinary
# Bazel tests on generated inputs (e.g. //trainer/averaging:codec_fuzz_test).
#
#   tools/fuzz/run_fuzzers.sh [RUNS]      (default 200000 inputs per target)
#   FUZZ_SECONDS=30 tools/fuzz/run_fuzzers.sh   (each target for 30 s instead;
#                                                what tests/run_all.sh does)
#
# A target that finds a crash makes the script fail; the input is kept in
# $FUZZ_OUT (default /tmp/dd-fuzz) as crash-*.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-200000}"
out="${FUZZ_OUT:-/tmp/dd-fuzz}"
mkdir -p "$out"
CXX="${CXX:-clang++-14}"
# In CI leave no Bazel server behind (as tests/run_all.sh does).
bazel() { if [ -n "${CI:-}" ]; then command bazel --batch "$@"; else command bazel "$@"; fi; }
absl=$(pkg-config --libs absl_status absl_strings absl_statusor absl_time absl_str_format absl_synchronization absl_hash absl_raw_hash_set 2>/dev/null ||
       echo "-labsl_status -labsl_strings -labsl_time")

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
build tar_fuzz common/tar/tar_fuzz.cc common/tar/tar_format.cc common/io/file_util.cc
targets+=(tar_fuzz)
build peer_credential_fuzz common/crypto/peer_credential_fuzz.cc common/crypto/peer_credential.cc \
  common/io/file_util.cc -lcrypto
targets+=(peer_credential_fuzz)
build run_config_fuzz trainer/collab/run_config_fuzz.cc trainer/collab/sync_config.cc \
  trainer/averaging/codec.cc trainer/averaging/span_reducer.cc common/thread/parallel_for.cc
targets+=(run_config_fuzz)
# The averaging service's request handling: its messages come from Bazel's
# protoc output (tests/run_all.sh builds it before this step).
[ -f bazel-bin/protos/averaging.pb.cc ] || bazel build //protos:averaging_proto
build reducer_registry_fuzz -Ibazel-bin trainer/averaging/reducer_registry_fuzz.cc \
  trainer/averaging/reducer_registry.cc trainer/averaging/span_reducer.cc trainer/averaging/codec.cc \
  common/thread/parallel_for.cc bazel-bin/protos/averaging.pb.cc -lprotobuf
targets+=(reducer_registry_fuzz)
# Targets over a whole service library: the sources, generated protobuf
# files and libraries of a Bazel fuzz target come from `bazel query`, and are
# compiled here with clang (in parallel, one object per file).
build_bazel() {  # name, bazel target of the fuzz entry point (a cc_library)
  local name=$1 target=$2 objs=() libs
  bazel build "$target" >/dev/null 2>&1 || bazel build "$target"
  local srcs gens
  srcs=$(bazel query "kind('source file', deps($target))" 2>/dev/null | grep '^//' | grep '\.cc$' |
         sed 's|^//||; s|:|/|')
  gens=$(bazel query "kind('generated file', deps($target))" 2>/dev/null | grep '^//' | grep '\.cc$' |
         sed 's|^//|bazel-bin/|; s|:|/|')
  libs=$(bazel query --output=build "attr(linkopts, '.', kind(cc_library, deps($target)))" 2>/dev/null |
         grep -o '"-l[^"]*"' | tr -d '"' | awk '!seen[$0]++' | tr '\n' ' ')
  mkdir -p "$out/obj/$name"
  for src in $srcs $gens; do objs+=("$out/obj/$name/$(echo "$src" | tr '/' '_').o"); done
  # shellcheck disable=SC2086
  printf '%s\n' $srcs $gens | xargs -P "$(nproc)" -I{} sh -c \
    '"$1" -std=c++17 -O1 -g -fsanitize=fuzzer-no-link,address -I. -Ibazel-bin -Ithird_party/grpc_proto \
       -Ibazel-bin/third_party/grpc_proto -c "$2" -o "$3/$(echo "$2" | tr / _).o"' _ "$CXX" {} "$out/obj/$name"
  # shellcheck disable=SC2086
  "$CXX" -fsanitize=fuzzer,address "${objs[@]}" $libs $absl -o "$out/$name"
}

# The coordinator's request handling (CoordinatorCore over an in-memory
# ledger): services/coordinator/coordinator_core_fuzz.cc.
build_bazel coordinator_core_fuzz //services/coordinator:coordinator_core_fuzz_target
targets+=(coordinator_core_fuzz)
# Seeds: the scripted runs its Bazel test generates (joins, leases, rounds).
mkdir -p "$out/coordinator_core_fuzz.corpus"
DD_FUZZ_SEED_DIR="$out/coordinator_core_fuzz.corpus" \
  bazel run //services/coordinator:coordinator_core_fuzz_test >/dev/null 2>&1 || true
# The dataset service's request handling over loopback gRPC:
# services/dataset/dataset_service_fuzz.cc, seeded likewise.
build_bazel dataset_service_fuzz //services/dataset:dataset_service_fuzz_target
targets+=(dataset_service_fuzz)
mkdir -p "$out/dataset_service_fuzz.corpus"
DD_FUZZ_SEED_DIR="$out/dataset_service_fuzz.corpus" \
  bazel run //services/dataset:dataset_service_fuzz_test >/dev/null 2>&1 || true
if [ -n "${FUZZ_SECONDS:-}" ]; then limit=(-max_total_time="$FUZZ_SECONDS"); what="$FUZZ_SECONDS s"
else limit=(-runs="$runs"); what="$runs inputs"; fi
failed=0
for target in "${targets[@]}"; do
  echo "== $target: $what"
  mkdir -p "$out/$target.corpus"
  if ! (cd "$out" && "./$target" "${limit[@]}" -max_len=70000 "$target.corpus" > "$target.log" 2>&1); then
    echo "FAILED: $target found a crash (see $out/$target.log)"
    failed=1
  fi
  tail -2 "$out/$target.log"
done
exit "$failed"
