#!/usr/bin/env bash
# Packs what the GPU machine lacks for building the compute core (Abseil's
# headers and shared libraries, nlohmann/json's headers; see
# ../shared/notes/gpu.md) from this Debian machine into out/gpu-deps, which a
# device run carries (`carry: ["out/gpu-deps"]`, ~20 MB).
set -euo pipefail
cd "$(dirname "$0")/../.."
./deploy/setup/install_deps.sh >/dev/null
dest=out/gpu-deps
rm -rf "$dest"
mkdir -p "$dest/include" "$dest/lib"
cp -r /usr/include/absl /usr/include/nlohmann "$dest/include/"
cp -a /usr/lib/x86_64-linux-gnu/libabsl_*.so* "$dest/lib/"
du -sh "$dest" | sed 's/^/packed /'
