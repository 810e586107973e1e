#!/usr/bin/env bash
# Tests the GPU machine's build path (tools/gpu: make_bundle.sh here,
# build_from_bundle.sh there) on this machine: a bundle of the parity tool
# is replayed against a libtorch-shaped folder made from Debian's files (as
# the GPU machine's CUDA libtorch would be), the binary it builds passes
# parity on the fixture, finds its libraries through its rpath (the
# bundle's and the folder's), and no compilation read a header that the
# GPU machine lacks (bundle.py check, itself checked on a planted header).
# Runs Bazel, so tests/run_all.sh calls it outside Bazel.
set -uo pipefail
cd "$(dirname "$0")/../.."
source tests/build/libtorch_folder.sh
tmp=$(mktemp -d /tmp/gpu-bundle.XXXXXX)
failures=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
cleanup() {
  rm -rf "$tmp"
  # In CI leave no Bazel server behind (make_bundle.sh starts one).
  if [ -n "${CI:-}" ]; then bazel shutdown >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
fixtures=$(realpath ../shared/fixtures 2>/dev/null || true)
[ -d "$fixtures/tiny-sd1" ] || { echo "FAIL: ../shared/fixtures/tiny-sd1 not found"; exit 1; }

if ! TARGETS=//trainer/tools:parity tools/gpu/make_bundle.sh > "$tmp/make.log" 2>&1; then
  fail "make_bundle"; tail -20 "$tmp/make.log"; exit 1
fi
pass "make_bundle: $(grep -h '^bundle:' "$tmp/make.log")"
cp out/gpu-bundle.tar.gz "$tmp/"

make_libtorch_folder "$tmp/libtorch"
if LIBTORCH="$tmp/libtorch" WORK="$tmp/build" tools/gpu/build_from_bundle.sh \
     "$tmp/gpu-bundle.tar.gz" > "$tmp/replay.log" 2>&1; then
  parity=$(grep '/parity$' "$tmp/replay.log" | tail -1)
  pass "replayed: $parity"
else
  fail "build_from_bundle"; tail -20 "$tmp/replay.log"; exit 1
fi

out=$("$parity" --model_dir="$fixtures/tiny-sd1/model" \
       --reference_dir="$fixtures/tiny-sd1/reference" 2>&1)
if grep -q ", 0 failed" <<< "$out" && grep -q "unet.output .*PASS" <<< "$out"; then
  pass "the replayed parity passes on the fixture ($(tail -1 <<< "$out"))"
else
  fail "the replayed parity: $(tail -5 <<< "$out")"
fi

# DT_RPATH, not RUNPATH: the bundle's libraries find theirs there too (the
# GPU machine has no libunwind, which glog loads; RUNPATH would leave it to
# the system's search and the binary would not start there).
rpath=$(readelf -d "$parity" | sed -n 's/.*(RPATH).*\[\(.*\)\]/\1/p')
torch_from=$(ldd "$parity" | awk '/libtorch_cpu/ {print $3}')
glog_from=$(ldd "$parity" | awk '/libglog/ {print $3}')
unwind_from=$(ldd "$parity" | awk '/libunwind/ {print $3}')
if [[ "$torch_from" == "$tmp/libtorch/lib/"* ]] && [[ "$glog_from" == "$tmp/build/gpu-bundle/lib/"* ]] \
   && [[ "$unwind_from" == "$tmp/build/gpu-bundle/lib/"* ]] && [ -n "$rpath" ]; then
  pass "libraries through the rpath, glog's own too ($rpath)"
else
  fail "libraries: libtorch_cpu from '$torch_from', glog from '$glog_from', its libunwind from '$unwind_from', RPATH '$rpath'"
fi

if python3 tools/gpu/bundle.py check --bundle "$tmp/build/gpu-bundle" > "$tmp/check.log" 2>&1; then
  pass "$(cat "$tmp/check.log")"
else
  fail "headers from outside the bundle: $(cat "$tmp/check.log")"
fi
# The check itself: a compilation that read a Debian-only header must fail it.
d=$(find "$tmp/build/gpu-bundle/execroot/bazel-out/" -name 'parity_main.pic.d' | head -1)
echo " /usr/include/absl/base/config.h" >> "$d"
if ! python3 tools/gpu/bundle.py check --bundle "$tmp/build/gpu-bundle" > "$tmp/check2.log" 2>&1 \
   && grep -q "absl/base/config.h" "$tmp/check2.log"; then
  pass "the check catches a header the GPU machine lacks"
else
  fail "the check missed a planted header: $(cat "$tmp/check2.log")"
fi

[ "$failures" -eq 0 ] || { echo "gpu bundle: $failures failed"; exit 1; }
echo "gpu bundle: all passed"
