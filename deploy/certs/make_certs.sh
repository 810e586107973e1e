#!/usr/bin/env bash
# Makes a private CA and one key and certificate per service (each valid only
# for its own names), plus a run token and an admin token, for a private
# group's deployment. Servers without certificates accept loopback
# connections only, so anything across machines or containers needs these.
#
#   deploy/certs/make_certs.sh OUT_DIR SERVICE[=NAME,NAME...] ...
#   deploy/certs/make_certs.sh secrets dataset coordinator trainer-0=trainer-0,203.0.113.5
#
# writes OUT_DIR/ca.pem (give it to everyone as --tls_ca), and for each
# SERVICE OUT_DIR/SERVICE.pem and OUT_DIR/SERVICE.key (its --tls_cert and
# --tls_key) for the names SERVICE, the NAMEs given (host names or IPv4
# addresses), localhost and 127.0.0.1. A separate key per service means a
# trainer that holds its own key cannot pose as the coordinator or the
# dataset service. The CA key, tokens and existing service keys are kept
# when the script runs again (delete a file to renew it).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 OUT_DIR SERVICE[=NAME,NAME...] ..." >&2
  exit 2
fi
out="$1"; shift
mkdir -p "$out"
cd "$out"
umask 077
[ -f ca.pem ] || openssl req -x509 -newkey rsa:3072 -nodes -days 825 \
  -subj /CN=distributed-diffusion-ca -keyout ca.key -out ca.pem 2>/dev/null
for spec in "$@"; do
  service="${spec%%=*}"
  if ! [[ "$service" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]]; then
    echo "bad service name: $service" >&2
    exit 2
  fi
  names="$service"
  [ "$spec" != "$service" ] && names+=",${spec#*=}"
  san="subjectAltName="
  IFS=, read -ra list <<< "$names"
  for name in "${list[@]}" localhost; do
    if [[ "$name" =~ ^[0-9.]+$ ]]; then san+="IP:$name,"; else san+="DNS:$name,"; fi
  done
  san+="IP:127.0.0.1"
  if [ -f "$service.pem" ]; then continue; fi
  echo "$san" > "$service.ext"
  openssl req -newkey rsa:3072 -nodes -subj "/CN=$service" -keyout "$service.key" \
    -out "$service.csr" 2>/dev/null
  openssl x509 -req -in "$service.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
    -extfile "$service.ext" -out "$service.pem" 2>/dev/null
  rm -f "$service.csr" "$service.ext"
  chmod 644 "$service.pem"
done
chmod 644 ca.pem
[ -f token ] || openssl rand -hex 32 > token
[ -f admin_token ] || openssl rand -hex 32 > admin_token
echo "wrote $out/ca.pem, token, admin_token and a key and certificate for each of:" \
  "$(for s in "$@"; do printf '%s ' "${s%%=*}"; done)"
