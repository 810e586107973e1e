#!/bin/sh
# dd-peer: starts `train` as a peer of a run, its flags taken from the
# container's environment (compose and Kubernetes set these), followed by
# any arguments given (training flags: --batch_size, --lr, --device, ...).
#
#   DD_COORDINATOR     host:port of the coordinator (required)
#   DD_PUBLIC_ADDRESS  host:port the other peers dial (default: this
#                      container's host name and DD_PEER_PORT)
#   DD_PEER_PORT       port of this peer's averaging service (50060)
#   DD_PEER_NAME       name shown by `ddctl peers` (default: the host name)
#   DD_TOKEN_FILE      the run token or an invitation (/run/secrets/dd_token)
#   DD_TLS_CA, DD_TLS_CERT, DD_TLS_KEY   PEM files (TLS when DD_TLS_CA is set)
#   DD_MODEL_DIR       the base model folder (/model)
#   DD_OUTPUT_DIR      checkpoints, samples, logs (/var/lib/dd/checkpoints)
set -eu
: "${DD_COORDINATOR:?DD_COORDINATOR (host:port of the coordinator) is not set}"
port="${DD_PEER_PORT:-50060}"
set -- --coordinator="$DD_COORDINATOR" \
  --listen="0.0.0.0:$port" \
  --public_address="${DD_PUBLIC_ADDRESS:-$(hostname):$port}" \
  --peer_name="${DD_PEER_NAME:-$(hostname)}" \
  --auth_token_file="${DD_TOKEN_FILE:-/run/secrets/dd_token}" \
  --model_dir="${DD_MODEL_DIR:-/model}" \
  --output_dir="${DD_OUTPUT_DIR:-/var/lib/dd/checkpoints}" \
  "$@"
if [ -n "${DD_TLS_CA:-}" ]; then
  set -- --tls_ca="$DD_TLS_CA" "$@"
  if [ -n "${DD_TLS_CERT:-}" ]; then
    set -- --tls_cert="$DD_TLS_CERT" --tls_key="${DD_TLS_KEY:?DD_TLS_KEY is not set}" "$@"
  fi
fi
exec train "$@"
