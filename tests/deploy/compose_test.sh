#!/usr/bin/env bash
# The private group's deployment, end to end, as docs/deploy.md tells it (run
# by tests/run_all.sh; needs root):
#  1. deploy/compose/docker-compose.yml against the Compose Specification;
#  2. both images built from the Bazel outputs (deploy/docker/build_images.sh);
#  3. the servers' host: make_secrets.sh, then the dataset service, the
#     coordinator and one trainer of its own (cpu profile), over TLS;
#  4. a second machine's peer: the bundle from make_secrets.sh --peer, in a
#     folder of its own with its own compose project and network, joining
#     through the host's published ports and its public address;
#  5. midway the coordinator's process is killed (SIGKILL): its restart
#     policy brings it back on its ledger volume with no chunk completion
#     lost, and the run goes on;
#  6. both trainers end with equal parameter hashes; `docker-compose down -v`
#     leaves no container, volume or network behind.
# Uses a running Docker engine or starts its own (tests/deploy/docker_engine.sh,
# addresses in 198.18.0.0/15, host networking restored afterwards). The base
# image debian:bookworm is made once (deploy/docker/make_base_image.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
source tests/deploy/docker_engine.sh

work=$(mktemp -d /tmp/dd-compose-test.XXXXXX)
project="ddcomposetest$$"
tag="compose-test"
compose=(docker-compose --project-directory "$repo/deploy/compose"
         -f "$repo/deploy/compose/docker-compose.yml" -p "$project" --profile cpu)
bundle="$work/secrets/peers/remote"
peer_compose=(docker-compose --project-directory "$bundle" -f "$bundle/docker-compose.yml"
              -p "${project}peer")
cleanup() {
  local status=$?
  if [ $status -ne 0 ] && [ -f "$work/compose.env" ]; then
    echo "== logs (failure)"
    "${compose[@]}" logs --tail=30 2>&1 | tail -80 || true
    "${peer_compose[@]}" logs --tail=30 2>&1 | tail -40 || true
    # The whole logs, for a closer look than the tails above.
    mkdir -p "$repo/out/compose_test"
    "${compose[@]}" logs --no-color > "$repo/out/compose_test/servers.log" 2>&1 || true
    "${peer_compose[@]}" logs --no-color > "$repo/out/compose_test/remote.log" 2>&1 || true
    echo "   whole logs: $repo/out/compose_test/"
  fi
  if [ -f "$work/compose.env" ]; then
    "${peer_compose[@]}" down -v --remove-orphans > /dev/null 2>&1 || true
    "${compose[@]}" down -v --remove-orphans > /dev/null 2>&1 || true
  fi
  rm -rf "$work"
  if [ -n "$DOCKER_ENGINE_STATE" ]; then
    docker_engine_down || status=1
    # What the network-namespace benchmarks check before they start.
    source tools/bench/netns_lib.sh
    netns_check_forwarding || status=1
  fi
  exit $status
}
trap cleanup EXIT

echo "== the compose file against the Compose Specification (docker compose v2's format)"
schemas="$repo/tests/deploy/schemas"
(cd "$schemas" && npm ci --no-audit --no-fund --silent)
node "$schemas/compose.mjs" deploy/compose/docker-compose.yml
sed 's/^  restart: on-failure/  restart_policy: on-failure/' deploy/compose/docker-compose.yml \
  > "$work/misspelt.yml"
if node "$schemas/compose.mjs" "$work/misspelt.yml" > /dev/null; then
  echo "FAIL: the schema check accepted a misspelt key"; exit 1
fi

docker_engine_up
./deploy/docker/make_base_image.sh
./deploy/docker/build_images.sh --tag "$tag" | tail -2
bin="$repo/out/docker/bin/server"

# The servers' host as the peers dial it: the Docker host's address on the
# default bridge (containers of every network reach the host's published
# ports there, as a second machine reaches a public address).
host=$(docker network inspect bridge -f '{{(index .IPAM.Config 0).Gateway}}')
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'; }
coordinator_port=$(free_port) dataset_port=$(free_port)
trainer_port=$(free_port) remote_port=$(free_port) status_port=$(free_port)

echo "== the servers' host ($host): a dataset, a run configuration, the group's secrets"
"$bin/make_shapes_dataset" --out_dir="$work/data" --num_samples=512 --width=64 --height=64 \
  > /dev/null
chmod -R a+rX "$work"
cat > "$work/run.json" <<JSON
{"run_id": "compose-test", "model": "tiny", "target_batch_size": 16, "max_steps": 24, "codec": "fp16"}
JSON
chmod 644 "$work/run.json"
# make_secrets.sh writes deploy/compose/.env; keep the user's, if any.
env_file="$repo/deploy/compose/.env"
[ -f "$env_file" ] && cp "$env_file" "$work/user.env"
./deploy/compose/make_secrets.sh --dir "$work/secrets" --image-tag "$tag" --public-host "$host" \
  --dataset "$work/data" --run-config "$work/run.json"
mv "$env_file" "$work/compose.env"
[ -f "$work/user.env" ] && mv "$work/user.env" "$env_file"
for f in token admin_token dataset.key coordinator.key trainer-cpu-1.key; do
  owner=$(stat -c %u "$work/secrets/$f")
  [ "$owner" = 10001 ] || { echo "FAIL: $f is owned by uid $owner, not the images' 10001"; exit 1; }
done
# Small chunks so that completions happen during the test; free host ports.
cat >> "$work/compose.env" <<ENV
DD_CHUNK_SIZE=16
DD_COORDINATOR_PORT=$coordinator_port
DD_STATUS_PORT=127.0.0.1:$status_port
DD_DATASET_PORT=$dataset_port
DD_TRAINER_1_PORT=$trainer_port
DD_PUBLIC_DATASET_ADDRESS=$host:$dataset_port
DD_TRAINER_1_ADDRESS=$host:$trainer_port
ENV
compose+=(--env-file "$work/compose.env")

echo "== docker-compose --profile cpu up -d trainer-cpu-1 (with the dataset service and the coordinator)"
"${compose[@]}" up -d --no-build trainer-cpu-1 2>&1 | grep -v "^Creating.*\.\.\. $" | tail -6

echo "== a peer on another machine: the bundle, docker-compose.yml and ./model in a folder of its own"
./deploy/compose/make_secrets.sh --dir "$work/secrets" --peer remote --cpu --peer-host "$host" \
  --peer-address "$host:$remote_port" --public-host "$host" --coordinator "$host:$coordinator_port"
cp deploy/compose/docker-compose.yml "$bundle/"
cp -r deploy/local/shapes-tiny-base "$bundle/model"
chmod -R a+rX "$bundle/model"
(cd "$bundle" && "${peer_compose[@]}" up -d --no-build --no-deps trainer-cpu-1 2>&1 |
   grep -v "^Creating.*\.\.\. $" | tail -3)

container() { "${compose[@]}" ps -q "$1"; }
# (docker-compose 1.29 warns on stderr that the servers' secret files are not in
# the bundle: they belong to services a peer does not run.)
remote() { "${peer_compose[@]}" ps -q trainer-cpu-1 2> /dev/null; }
# ddctl on the host, through the coordinator's published port.
ddctl() {
  "$bin/ddctl" --coordinator="localhost:$coordinator_port" \
    --auth_token_file="$work/secrets/token" --tls_ca="$work/secrets/ca.pem" "$@"
}

for id in "$(container dataset)" "$(container coordinator)" "$(container trainer-cpu-1)" "$(remote)"; do
  user=$(docker inspect -f '{{.Config.User}}' "$id")
  [ "$user" = "10001:10001" ] || { echo "FAIL: $(docker inspect -f '{{.Name}}' "$id") runs as '$user'"; exit 1; }
done
# Every address Docker gave out lies in 198.18.0.0/15 (never a private range).
for network in "${project}_default" "${project}peer_default"; do
  subnets=$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' "$network")
  for subnet in $subnets; do
    [[ "$subnet" =~ ^198\.1[89]\. ]] || { echo "FAIL: $network has $subnet"; exit 1; }
  done
  echo "   network $network: $subnets"
done
for service in dataset coordinator; do
  # (Not `| grep -q`: with pipefail, grep leaving early makes docker logs
  # fail with SIGPIPE when the log is long.)
  log=$(docker logs "$(container $service)" 2>&1)
  grep -q "listening on .*TLS)" <<< "$log" || { echo "FAIL: $service does not speak TLS"; exit 1; }
done

# The status page's data through the published port: refused without the
# viewer token, the run's state with it.
status_json() {
  python3 - "http://127.0.0.1:$status_port/api/state" "$@" <<'PY'
import json, sys, urllib.error, urllib.request
url = sys.argv[1] + ("?token=" + open(sys.argv[2]).read().strip() if len(sys.argv) > 2 else "")
try:
    print(json.load(urllib.request.urlopen(url, timeout=10))["run"]["runId"])
except urllib.error.HTTPError as e:
    print(f"HTTP {e.code}")
PY
}
for i in $(seq 1 30); do
  page=$(status_json "$work/secrets/viewer_token" 2> /dev/null || true)
  [ "$page" = compose-test ] && break
  sleep 1
done
[ "$page" = compose-test ] || { echo "FAIL: the status page answered '$page'"; exit 1; }
[ "$(status_json)" = "HTTP 401" ] || { echo "FAIL: the status page opened without a token"; exit 1; }
echo "   status page (published port, viewer token): run $page; without the token: HTTP 401"

# The admin calls: refused on the published port even with the admin token;
# served on the coordinator's loopback admin address inside its container.
if refused=$(ddctl --admin_token_file="$work/secrets/admin_token" invite from-outside 2>&1); then
  echo "FAIL: an admin call went through the published port"; exit 1
fi
grep -q "admin calls are served on the coordinator's admin address" <<< "$refused" ||
  { echo "FAIL: the published port refused an admin call with: $refused"; exit 1; }
invitation=$(docker exec "$(container coordinator)" ddctl --coordinator=127.0.0.1:50059 \
  --auth_token_file=/run/secrets/dd_token --admin_token_file=/run/secrets/dd_admin_token \
  --tls_ca=/run/secrets/dd_ca invite from-inside) ||
  { echo "FAIL: the admin address inside the coordinator's container refused: $invitation"; exit 1; }
[ -n "$invitation" ] || { echo "FAIL: the admin address issued an empty invitation"; exit 1; }
echo "   admin calls: refused on the published port, served on 127.0.0.1:50059 in the container"

completions() { ddctl status 2> /dev/null | sed -n 's/.*(\([0-9]*\) chunk completions).*/\1/p'; }
echo "== waiting for the first chunk completions"
before=""
for i in $(seq 1 180); do
  before=$(completions || true)
  [ -n "$before" ] && [ "$before" -ge 2 ] && break
  sleep 2
done
[ -n "$before" ] && [ "$before" -ge 2 ] || { echo "FAIL: no chunk completions after 6 min"; exit 1; }
ddctl peers | sed 's/^/   /'
# The trainer image's HEALTHCHECK command, over TLS, in both trainers.
for id in "$(container trainer-cpu-1)" "$(remote)"; do
  docker exec "$id" dd-healthcheck > /dev/null ||
    { echo "FAIL: dd-healthcheck in $(docker inspect -f '{{.Name}}' "$id")"; exit 1; }
done
echo "   dd-healthcheck: both trainers SERVING"

# `docker kill` would count as a deliberate stop (Docker then skips the
# restart policy); a crash is the process dying under it.
before=$(completions)
echo "== SIGKILL to the coordinator's process ($before completions recorded)"
pid=$(docker inspect -f '{{.State.Pid}}' "$(container coordinator)")
kill -KILL "$pid"
restarted=""
for i in $(seq 1 60); do
  count=$(docker inspect -f '{{.RestartCount}}' "$(container coordinator)")
  health=$(docker inspect -f '{{.State.Health.Status}}' "$(container coordinator)")
  if [ "$count" -ge 1 ] && [ "$health" = healthy ]; then restarted=yes; break; fi
  sleep 2
done
[ -n "$restarted" ] || { echo "FAIL: the coordinator did not come back (restarts $count, $health)"; exit 1; }
after=$(completions)
echo "   restarted by its policy: $after completions on the ledger volume"
[ "$after" -ge "$before" ] || { echo "FAIL: completions went from $before to $after"; exit 1; }

echo "== waiting for both trainers to finish the run (24 global steps)"
for id in "$(container trainer-cpu-1)" "$(remote)"; do
  code=$(timeout 900 docker wait "$id") || { echo "FAIL: a trainer is still running"; exit 1; }
  [ "$code" = 0 ] || { echo "FAIL: $(docker inspect -f '{{.Name}}' "$id") exited with $code"; exit 1; }
done
hash1=$(docker logs "$(container trainer-cpu-1)" 2>&1 | grep -o 'final parameters [0-9a-f]*' | tail -1)
hash2=$(docker logs "$(remote)" 2>&1 | grep -o 'final parameters [0-9a-f]*' | tail -1)
echo "   the host's trainer: $hash1"
echo "   the remote peer:    $hash2"
[ -n "$hash1" ] && [ "$hash1" = "$hash2" ] || { echo "FAIL: the trainers' parameters differ"; exit 1; }
final=$(completions)
[ "$final" -ge "$after" ] || { echo "FAIL: completions went from $after to $final"; exit 1; }
# 24 global steps of 16 samples, each peer's 192 samples twelve whole chunks: a
# completion lost in the crash would show as fewer samples trained.
trained=$(ddctl status | sed -n 's/^samples trained: \([0-9]*\).*/\1/p')
[ "$trained" -ge 384 ] || { echo "FAIL: the ledger counts $trained samples trained, not 384"; exit 1; }
ddctl status | sed 's/^/   /'

echo "== docker-compose down -v (both machines)"
(cd "$bundle" && "${peer_compose[@]}" down -v --remove-orphans 2>&1 | tail -1)
"${compose[@]}" down -v --remove-orphans 2>&1 | tail -1
for p in "$project" "${project}peer"; do
  left=$(docker ps -aq --filter "label=com.docker.compose.project=$p")
  vols=$(docker volume ls -q --filter "label=com.docker.compose.project=$p")
  nets=$(docker network ls -q --filter "label=com.docker.compose.project=$p")
  [ -z "$left$vols$nets" ] || { echo "FAIL: $p left behind: $left $vols $nets"; exit 1; }
done
rm -f "$work/compose.env"
echo "compose_test: PASSED"
