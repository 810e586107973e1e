#!/usr/bin/env bash
# Makes a private CA and one certificate for the given host names / IPs, plus
# a run token, for a private group's deployment. Servers without certificates
# accept loopback connections only, so anything across machines or
# containers needs these.
#
#   deploy/certs/make_certs.sh OUT_DIR dataset coordinator trainer-0 10.1.2.3 ...
set -euo pipefail
out="$1"; shift
mkdir -p "$out"
cd "$out"
san="subjectAltName="
for name in "$@" localhost; do
  if [[ "$name" =~ ^[0-9.]+$ ]]; then san+="IP:$name,"; else san+="DNS:$name,"; fi
done
san+="IP:127.0.0.1"
echo "$san" > san.ext
[ -f ca.pem ] || openssl req -x509 -newkey rsa:3072 -nodes -days 825 -subj /CN=distributed-diffusion-ca \
  -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey rsa:3072 -nodes -subj /CN=distributed-diffusion -keyout server.key \
  -out server.csr 2>/dev/null
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
  -extfile san.ext -out server.pem 2>/dev/null
[ -f token ] || (umask 077; openssl rand -hex 32 > token)
[ -f admin_token ] || (umask 077; openssl rand -hex 32 > admin_token)
chmod 600 ca.key server.key
echo "wrote $out/{ca.pem,server.pem,server.key,token,admin_token} for: $*"
