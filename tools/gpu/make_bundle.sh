#!/usr/bin/env bash
# Prepares, on this Debian machine, what the GPU machine needs to build the
# trainer's binaries without Bazel (it has g++ and a CUDA libtorch, but no
# Bazel, gRPC, RocksDB, glog or gflags: ../shared/notes/gpu.md):
# out/gpu-bundle.tar.gz, at most 64 MiB, with Bazel's own compile, archive
# and link commands for TARGETS, the generated protobuf/gRPC sources, the
# system headers those commands read and the shared libraries the binaries
# need (tools/gpu/bundle.py). There: tools/gpu/build_from_bundle.sh.
#
#   tools/gpu/make_bundle.sh
#   TARGETS="//trainer:train" MODE=opt tools/gpu/make_bundle.sh
# MODE is Bazel's compilation mode (.bazelrc adds -O2 to every mode).
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGETS=${TARGETS:-"//trainer:train //trainer:sample //trainer/tools:parity //trainer/training:unet_step_bench //trainer/data:data_loader_bench //trainer/tools:make_shapes_dataset"}
MODE=${MODE:-fastbuild}
./deploy/setup/install_deps.sh >/dev/null
mkdir -p out
# shellcheck disable=SC2086
bazel build -c "$MODE" $TARGETS
query=""
for t in $TARGETS; do query="${query:+$query + }deps($t)"; done
bazel aquery -c "$MODE" --output=jsonproto "mnemonic('CppCompile|CppArchive|CppLink', $query)" \
  > out/gpu-bundle.aquery.json 2>/dev/null
python3 tools/gpu/bundle.py make --aquery out/gpu-bundle.aquery.json \
  --execroot "$(bazel info execution_root 2>/dev/null)" --out out/gpu-bundle
tar -C out -czf out/gpu-bundle.tar.gz gpu-bundle
size=$(stat -c %s out/gpu-bundle.tar.gz)
echo "out/gpu-bundle.tar.gz: $((size / 1024 / 1024)) MiB"
if [ "$size" -gt $((64 * 1024 * 1024)) ]; then
  echo "make_bundle: the bundle is over 64 MiB, more than a device run carries" >&2
  exit 1
fi
