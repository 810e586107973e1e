#!/usr/bin/env bash
# Installs every Debian 12 package the build, the tests and the demo need.
# Idempotent: does nothing (and needs no network) when all are present.
# Called first by tests/run_all.sh and deploy/local/demo.sh.
set -euo pipefail

PACKAGES=(
  # Build: Bazel 4.2.3 (WORKSPACE mode) and the rule sets it needs offline.
  bazel-bootstrap bazel-rules-java bazel-platforms
  g++ pkg-config
  # RPC and serialization.
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  libabsl-dev libssl-dev
  # Storage, flags, logging.
  librocksdb-dev libgflags-dev libgoogle-glog-dev
  # Compute and images. libopenblas0-pthread makes OpenBLAS the system BLAS
  # that Debian's libtorch calls (19x faster float32 GEMM than the reference
  # BLAS here; docs/benchmarks.md).
  libtorch-dev libopenblas0-pthread libpng-dev libturbojpeg0-dev libjpeg62-turbo-dev libwebp-dev libexif-dev
  # Text.
  libre2-dev libutf8proc-dev nlohmann-json3-dev
  # HTTP (/metrics, the status page; Hub downloads).
  libcpp-httplib-dev libcurl4-openssl-dev
  # Tests and benchmarks (fuzzing: clang's libFuzzer).
  libgtest-dev libgmock-dev libbenchmark-dev clang-14 libclang-rt-14-dev
  # Used by tests and scripts: openssl (test certificates, tokens), tar,
  # iproute2 (network-namespace benchmarks), python3 (log summaries).
  openssl tar iproute2 python3 ca-certificates
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "install_deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install_deps: done"
