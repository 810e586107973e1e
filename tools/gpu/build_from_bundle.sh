#!/usr/bin/env bash
# On the GPU machine (no Bazel): builds the binaries of a bundle made by
# tools/gpu/make_bundle.sh against that machine's libtorch, by replaying
# Bazel's commands with g++ (tools/gpu/bundle.py replay). Prints the paths of
# the binaries.
#
#   tools/gpu/build_from_bundle.sh [BUNDLE.tar.gz]
#   LIBTORCH=/path/to/libtorch WORK=/tmp/dd-gpu-build JOBS=16
set -euo pipefail
cd "$(dirname "$0")/../.."
bundle=${1:-out/gpu-bundle.tar.gz}
libtorch=${LIBTORCH:-/opt/torch/.venv/lib/python3.12/site-packages/torch}
work=${WORK:-/tmp/dd-gpu-build}
rm -rf "$work"
mkdir -p "$work"
tar -C "$work" -xzf "$bundle"
python3 tools/gpu/bundle.py replay --bundle "$work/gpu-bundle" --source "$(pwd)" \
  --libtorch "$libtorch" --jobs "${JOBS:-$(nproc)}"
