#!/usr/bin/env bash
# Builds the binaries the images carry with Bazel (.bazelrc: -O2) and copies them to
# OUT/server/ and OUT/trainer/ (the layout deploy/docker/Dockerfile copies
# from). Used by the source build inside Docker and, on the host, by
# build_images.sh (whose OUT is out/docker/bin).
#
#   deploy/docker/stage_binaries.sh OUT
set -euo pipefail
out="${1:?usage: $0 OUT}"
cd "$(dirname "$0")/../.."
server=(services/dataset:dataset_server services/dataset:dataset_fetch
        services/coordinator:coordinator services/coordinator:ddctl common/rpc:rpc_probe
        common/rpc:dd_grpcurl
        trainer/averaging:averaging_member trainer/tools:make_shapes_dataset)
trainer=(trainer:train trainer:sample trainer/tools:init_model common/rpc:rpc_probe)
targets=()
for t in "${server[@]}" "${trainer[@]}"; do targets+=("//$t"); done
bazel ${BAZEL_STARTUP:-} build "${targets[@]}" 2>&1 | grep -v linux-sandbox | tail -2
bin=$(bazel ${BAZEL_STARTUP:-} info bazel-bin 2> /dev/null)
rm -rf "$out/server" "$out/trainer"
mkdir -p "$out/server" "$out/trainer"
for t in "${server[@]}"; do cp "$bin/${t%%:*}/${t#*:}" "$out/server/"; done
for t in "${trainer[@]}"; do cp "$bin/${t%%:*}/${t#*:}" "$out/trainer/"; done
chmod 755 "$out"/server/* "$out"/trainer/*
