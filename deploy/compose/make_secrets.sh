#!/usr/bin/env bash
# Makes what deploy/compose/docker-compose.yml needs and writes its .env:
# a private CA, one key and certificate per service (deploy/certs/make_certs.sh),
# the run token and the admin token, readable inside the containers by the
# images' user (uid 10001) and by no one else on this host.
#
# On the host that runs the servers:
#   deploy/compose/make_secrets.sh [--dir DIR] [--public-host HOST] [--image-tag TAG]
#       [--dataset DIR] [--model DIR] [--run-config FILE]
# For a GPU owner on another machine (a bundle to hand over: DIR/peers/NAME):
#   deploy/compose/make_secrets.sh [--dir DIR] --peer NAME --peer-host THEIR_HOST --public-host HOST
#       [--cpu] [--peer-address THEIR_HOST:PORT] [--coordinator HOST:PORT]
# They run `docker-compose up -d --no-deps trainer-gpu` (trainer-cpu-1 for a
# --cpu bundle) in that folder, with docker-compose.yml and ./model beside.
#
# DIR defaults to deploy/compose/secrets (ignored by git); keep it outside
# the source tree on a shared machine. Running it again keeps existing keys
# and tokens (delete a file to renew it).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="$here/secrets"
public_host=""
tag=""
dataset="./data"
model="../local/shapes-tiny-base"
run_config="./run.json"
peer=""
peer_host=""
peer_cpu=""
peer_address=""
coordinator=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="$2"; shift ;;
    --public-host) public_host="$2"; shift ;;
    --image-tag) tag="$2"; shift ;;
    --dataset) dataset="$2"; shift ;;
    --model) model="$2"; shift ;;
    --run-config) run_config="$2"; shift ;;
    --peer) peer="$2"; shift ;;
    --peer-host) peer_host="$2"; shift ;;
    --peer-address) peer_address="$2"; shift ;;
    --coordinator) coordinator="$2"; shift ;;
    --cpu) peer_cpu=yes ;;
    *) sed -n '2,20p' "$0" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$dir"
chmod 700 "$dir"
dir="$(cd "$dir" && pwd)"
# The image tag: given, else the group's (kept in DIR), else the git commit.
if [ -z "$tag" ]; then
  tag=$(cat "$dir/image_tag" 2> /dev/null ||
        git -C "$here" rev-parse --short=12 HEAD 2> /dev/null || echo dev)
fi
extra=""
[ -n "$public_host" ] && extra="=$public_host"

# The containers run as uid 10001. As root, give the files to that user;
# otherwise they stay readable inside the 0700 folder only, which no other
# user of this host can enter (a bind mount does not pass through it).
secure() {
  local f
  for f in "$@"; do
    if [ "$(id -u)" = 0 ]; then chown 10001:10001 "$f"; chmod 400 "$f"; else chmod 444 "$f"; fi
  done
}

if [ -n "$peer" ]; then
  [ -n "$peer_host" ] || { echo "--peer needs --peer-host" >&2; exit 2; }
  [[ "$peer" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || { echo "bad peer name: $peer" >&2; exit 2; }
  [ -f "$dir/ca.key" ] || { echo "make the group's secrets first (without --peer)" >&2; exit 2; }
  [ -n "$public_host" ] || { echo "--peer needs --public-host (the servers' host)" >&2; exit 2; }
  bundle="$dir/peers/$peer"
  mkdir -p "$bundle"
  chmod 700 "$dir/peers" "$bundle"
  # The trainer service the peer runs, and the file names its secrets have.
  service=trainer-gpu profile=gpu flavour=cuda
  if [ -n "$peer_cpu" ]; then service=trainer-cpu-1 profile=cpu flavour=cpu; fi
  # make_certs.sh signs with the group's CA (it works in $dir, where ca.key
  # lives) and keeps this peer's certificate under its own name.
  "$here/../certs/make_certs.sh" "$dir" "peer-$peer=$service,$peer_host" > /dev/null
  cp "$dir/ca.pem" "$dir/token" "$bundle/"
  cp "$dir/peer-$peer.pem" "$bundle/$service.pem"
  cp "$dir/peer-$peer.key" "$bundle/$service.key"
  address="${peer_address:-$peer_host:50060}"
  cat > "$bundle/.env" <<ENV
COMPOSE_PROJECT_NAME=distributed-diffusion
COMPOSE_PROFILES=$profile
DD_IMAGE_TAG=$tag
DD_TRAINER_FLAVOUR=$flavour
DD_SECRETS_DIR=.
DD_COORDINATOR=${coordinator:-$public_host:50050}
DD_PEER_NAME=$peer
DD_MODEL_DIR=./model
# The address the other peers dial, and the host port that reaches this peer.
DD_PUBLIC_ADDRESS=$address
DD_PEER_PORT=${address##*:}
DD_TRAINER_1_ADDRESS=$address
DD_TRAINER_1_PORT=${address##*:}
ENV
  # The bundle travels to another machine, where uid 10001 may own nothing:
  # its files are readable by all, inside a folder only its owner may enter
  # (keep it that way there: tar keeps the modes).
  chmod 444 "$bundle"/ca.pem "$bundle"/token "$bundle/$service.pem" "$bundle/$service.key"
  echo "make_secrets: bundle for $peer in $bundle (give it to them over a private channel;"
  echo "  they run, there, with docker-compose.yml and ./model: docker-compose up -d --no-deps $service)"
  exit 0
fi

"$here/../certs/make_certs.sh" "$dir" "dataset$extra" "coordinator$extra" \
  "trainer-cpu-1$extra" "trainer-cpu-2$extra" "trainer-gpu$extra" > /dev/null
# Who may look at the status page and /metrics (not act on the run).
[ -f "$dir/viewer_token" ] || (umask 077 && openssl rand -hex 24 > "$dir/viewer_token")
secure "$dir"/token "$dir"/admin_token "$dir"/viewer_token "$dir"/*.key "$dir"/*.pem
[ "$(id -u)" = 0 ] && chown root:root "$dir/ca.key" && chmod 400 "$dir/ca.key"
echo "$tag" > "$dir/image_tag"
cat > "$here/.env" <<ENV
# Written by make_secrets.sh; docker-compose reads it from this folder.
COMPOSE_PROJECT_NAME=distributed-diffusion
DD_IMAGE_TAG=$tag
DD_SECRETS_DIR=$dir
DD_DATASET_DIR=$dataset
DD_MODEL_DIR=$model
DD_RUN_CONFIG=$run_config
ENV
if [[ "$public_host" =~ ^[0-9.]+$ ]]; then
  # This host's own trainers reach the coordinator from their container
  # addresses, not from the IP they publish, so the coordinator must not
  # insist on the two matching (docs/security.md); a host name avoids this.
  echo "DD_CHECK_PEER_ADDRESSES=false" >> "$here/.env"
fi
if [ -n "$public_host" ]; then
  cat >> "$here/.env" <<ENV
# Peers on other machines dial these.
DD_PUBLIC_DATASET_ADDRESS=$public_host:50051
DD_TRAINER_1_ADDRESS=$public_host:50061
DD_TRAINER_2_ADDRESS=$public_host:50062
DD_PUBLIC_ADDRESS=$public_host:50060
ENV
fi
echo "make_secrets: secrets in $dir, settings in $here/.env (image tag $tag)"
