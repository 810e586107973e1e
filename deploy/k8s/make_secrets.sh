#!/usr/bin/env bash
# Makes the dd-secrets Secret the manifests mount: a private CA, a key and
# certificate for the dataset service, the coordinator and the trainers
# (one for all trainer pods: *.trainer.NAMESPACE.svc, their headless
# Service's names), the run token, the admin token and the viewer token
# (the status page and /metrics). Writes
# DIR/dd-secrets.yaml for `kubectl apply -f` (keep it out of git) and keeps
# the CA key in DIR for later renewals.
#
#   deploy/k8s/make_secrets.sh [--namespace distributed-diffusion] [--dir deploy/k8s/secrets]
#   kubectl apply -f deploy/k8s/secrets/dd-secrets.yaml
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ns=distributed-diffusion
dir="$here/secrets"
while [ $# -gt 0 ]; do
  case "$1" in
    --namespace) ns="$2"; shift ;;
    --dir) dir="$2"; shift ;;
    *) sed -n '2,12p' "$0" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$dir"
chmod 700 "$dir"
names() { echo "$1.$ns.svc,$1.$ns.svc.cluster.local"; }
"$here/../certs/make_certs.sh" "$dir" "dataset=$(names dataset)" "coordinator=$(names coordinator)" \
  "trainer=*.trainer.$ns.svc,*.trainer.$ns.svc.cluster.local" > /dev/null
umask 077
[ -s "$dir/viewer_token" ] || openssl rand -hex 32 > "$dir/viewer_token"
{
  printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: dd-secrets\n  namespace: %s\n' "$ns"
  printf 'type: Opaque\ndata:\n'
  for f in token admin_token viewer_token ca.pem dataset.pem dataset.key coordinator.pem coordinator.key \
           trainer.pem trainer.key; do
    printf '  %s: %s\n' "$f" "$(base64 -w0 "$dir/$f")"
  done
} > "$dir/dd-secrets.yaml"
echo "make_secrets: wrote $dir/dd-secrets.yaml (namespace $ns); kubectl apply -f it"
