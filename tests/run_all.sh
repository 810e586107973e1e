#!/usr/bin/env bash
# Runs every test: unit tests beside the code and the multi-process suites
# under tests/ (Bazel test targets), then the tests of the build itself
# (tests/build/*_test.sh, which run Bazel), the deployment tests
# (tests/deploy/*_test.sh: Kubernetes manifests, the images and a
# docker-compose run), the status page in a browser (tests/ui/) and a short
# libFuzzer run of every fuzz target.
# Installs what is missing first.
# Exits non-zero on any failure; ends with "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

./deploy/setup/install_deps.sh || exit 1

# Tests that read the reference fixtures get their absolute location.
fixtures="$root/../shared/fixtures"
if [ -d "$fixtures" ]; then
  echo "test --test_env=FIXTURES_DIR=$(realpath "$fixtures")" > .bazelrc.fixtures
else
  echo "run_all: warning: $fixtures not found; fixture tests will fail" >&2
  : > .bazelrc.fixtures
fi

startup=()
# In CI leave no Bazel server behind.
if [ -n "${CI:-}" ]; then startup=(--batch); fi

log=$(mktemp)
bazel "${startup[@]}" test //... --test_summary=short --keep_going 2>&1 | tee "$log" \
  | grep -v "linux-sandbox" 
status=${PIPESTATUS[0]}

passed=$(grep -cE "^//[^ ]+ +(\(cached\) )?PASSED" "$log")
failed=$(grep -cE "^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD|INCOMPLETE)" "$log")
rm -f "$log"

# Runs one step outside Bazel (its name, then the command) and counts it.
run_step() {
  local name=$1; shift
  echo
  echo "== $name"
  if "$@"; then
    passed=$((passed + 1))
    echo "$name PASSED"
  else
    failed=$((failed + 1))
    status=1
    echo "$name FAILED"
  fi
}

# Tests of the build itself, which run Bazel and so cannot be Bazel tests.
for t in tests/build/*_test.sh; do
  run_step "$t" "$t"
done

# The deployment: Kubernetes manifests checked offline, then the images and
# the docker-compose run (a Docker engine, root; tests/deploy/compose_test.sh).
export BAZEL_STARTUP="${startup[*]}"
for t in tests/deploy/*_test.sh; do
  run_step "$t" "$t"
done

# The coordinator's status page in headless Chromium, with a running
# two-peer collaboration (tests/ui/status_page_test.sh).
for t in tests/ui/*_test.sh; do
  run_step "$t" "$t"
done

# Every libFuzzer target under libFuzzer itself for a short bounded time
# (FUZZ_SECONDS each; the Bazel tests above run the same entry points on
# generated inputs). A crash fails the run.
export FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
run_step "tools/fuzz/run_fuzzers.sh ($FUZZ_SECONDS s per target)" tools/fuzz/run_fuzzers.sh
echo
echo "$passed passed, $failed failed"
if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
  exit 1
fi
exit 0
