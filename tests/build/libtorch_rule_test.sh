#!/usr/bin/env bash
# Tests //bazel:libtorch.bzl, the rule that picks the libtorch to build
# against (--repo_env=LIBTORCH), by pointing it at libtorch-shaped folders
# made from Debian's libtorch files here, so the mechanism is tested and not
# only the default:
#   1. the default (unset): Debian's libtorch from /usr;
#   2. a CPU libtorch folder (include/, lib/ with the libraries under their
#      sonames): the probe's headers and libraries come from the folder and
#      it finds them at run time through its rpath;
#   3. the same folder with a libtorch_cuda (a stand-in library): detected as
#      a CUDA build and linked although nothing references it;
#   4. folders that are not a usable libtorch are refused with the reason.
# Runs Bazel itself, so it is not a Bazel test: tests/run_all.sh calls it.
# Uses its own output base; prints "PASS"/"FAIL" lines and exits non-zero
# on any failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
source tests/build/libtorch_folder.sh
tmp=$(mktemp -d /tmp/libtorch-rule.XXXXXX)
base="$tmp/output_base"
failures=0
bazel_() { bazel --batch --output_base="$base" "$@"; }
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
cleanup() {
  bazel --batch --output_base="$base" clean --expunge >/dev/null 2>&1 || true
  chmod -R u+w "$tmp" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

probe="bazel-bin/tests/build/libtorch_probe"
build_probe() {  # $1: LIBTORCH or "" ; output in $tmp/build.log
  local env=()
  [ -n "$1" ] && env=(--repo_env=LIBTORCH="$1")
  bazel_ build "${env[@]}" //tests/build:libtorch_probe > "$tmp/build.log" 2>&1
}
run_probe() { "$(bazel_ info bazel-bin 2>/dev/null)/tests/build/libtorch_probe"; }
probe_path() { echo "$(bazel_ info bazel-bin 2>/dev/null)/tests/build/libtorch_probe"; }

# 1. Default.
if build_probe "" && out=$(run_probe) && grep -q "built_with /usr" <<< "$out" \
   && grep -q "trace 13" <<< "$out"; then
  pass "default: Debian's libtorch ($(grep headers <<< "$out"))"
else
  fail "default build"; tail -20 "$tmp/build.log"
fi

# 2. A libtorch-shaped folder from Debian's files.
lt="$tmp/libtorch"
make_libtorch_folder "$lt"
if build_probe "$lt" && out=$(run_probe) && grep -q "built_with $lt" <<< "$out" \
   && grep -q "trace 13" <<< "$out"; then
  exe=$(probe_path)
  runpath=$(readelf -d "$exe" | sed -n 's/.*R\(UN\)\?PATH.*\[\(.*\)\]/\2/p')
  resolved=$(ldd "$exe" | awk '/libtorch_cpu/ {print $3}')
  if [[ ":$runpath:" == *":$lt/lib:"* ]] && [[ "$resolved" == "$lt/lib/"* ]]; then
    pass "LIBTORCH folder: rpath $lt/lib, libtorch_cpu loaded from $resolved"
  else
    fail "LIBTORCH folder: rpath '$runpath', libtorch_cpu from '$resolved'"
  fi
  # Its headers, not /usr/include's, were compiled: the folder's copy is
  # what the dependency file names.
  if grep -rqs "$lt/include/ATen/ATen.h\|external/libtorch/include/ATen/ATen.h" \
       "$base"/execroot/*/bazel-out/*/bin/tests/build/_objs/libtorch_probe/*.d; then
    pass "LIBTORCH folder: headers from the folder"
  else
    fail "LIBTORCH folder: the probe did not compile the folder's headers"
  fi
else
  fail "LIBTORCH folder build"; tail -20 "$tmp/build.log"
fi

# 3. A CUDA build: libtorch_cuda and libc10_cuda present (stand-ins here).
echo 'void dd_libtorch_cuda_stand_in(void) {}' > "$tmp/stub.c"
gcc -shared -fPIC -Wl,-soname,libtorch_cuda.so -o "$lt/lib/libtorch_cuda.so" "$tmp/stub.c"
gcc -shared -fPIC -Wl,-soname,libc10_cuda.so -o "$lt/lib/libc10_cuda.so" "$tmp/stub.c"
if build_probe "$lt" && out=$(run_probe) && grep -q "trace 13" <<< "$out"; then
  needed=$(readelf -d "$(probe_path)" | grep NEEDED)
  defs="$base/external/libtorch/defs.bzl"
  if grep -q "libtorch_cuda.so" <<< "$needed" && grep -q "libc10_cuda.so" <<< "$needed" \
     && grep -q "cuda = True" "$defs"; then
    pass "CUDA libtorch: detected, libtorch_cuda and libc10_cuda linked (--no-as-needed)"
  else
    fail "CUDA libtorch: NEEDED: $needed; $(grep cuda "$defs")"
  fi
else
  fail "CUDA libtorch build"; tail -20 "$tmp/build.log"
fi

# 4. Refusals, each with its reason.
bad="$tmp/not-libtorch"
mkdir -p "$bad/include" "$bad/lib"
if ! build_probe "$bad" && grep -q "is not a libtorch folder: include/ATen/ATen.h is missing" "$tmp/build.log"; then
  pass "a folder without libtorch is refused, naming what is missing"
else
  fail "a folder without libtorch was not refused clearly"; tail -5 "$tmp/build.log"
fi
old="$tmp/old-abi"
cp -r "$lt" "$old"
rm "$old/lib/libc10.so"
gcc -shared -fPIC -o "$old/lib/libc10.so" "$tmp/stub.c"  # no C++11-ABI symbols
if ! build_probe "$old" && grep -q "pre-C++11 ABI" "$tmp/build.log"; then
  pass "a pre-C++11-ABI libtorch is refused"
else
  fail "a pre-C++11-ABI libtorch was not refused"; tail -5 "$tmp/build.log"
fi
if ! build_probe "relative/path" && grep -q "must be an absolute path" "$tmp/build.log"; then
  pass "a relative LIBTORCH is refused"
else
  fail "a relative LIBTORCH was not refused"
fi

[ "$failures" -eq 0 ] || { echo "libtorch rule: $failures failed"; exit 1; }
echo "libtorch rule: all passed"
