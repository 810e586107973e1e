# A Docker engine for the deploy tests (sourced; needs root).
#
#   source tests/deploy/docker_engine.sh
#   docker_engine_up      # uses a running engine, or installs docker.io and starts one
#   ...                   # docker / docker-compose calls
#   docker_engine_down    # stops the engine it started and restores the host's networking
#
# An engine this file starts gets its bridge and every network it creates
# inside 198.18.0.0/15 (RFC 2544's benchmarking range; never a private
# range), and keeps images in the default data root so the base image made
# by deploy/docker/make_base_image.sh survives between runs. dockerd sets
# iptables' FORWARD policy to DROP, turns on IP forwarding and adds its own
# chains; docker_engine_down puts the host's iptables rules (filter and nat)
# and those sysctls back as they were, so the network-namespace benchmarks
# (tools/bench/netns_lib.sh) keep working after a deploy test.

DOCKER_ENGINE_STATE=""

docker_engine_up() {
  if docker info > /dev/null 2>&1; then
    echo "docker_engine: using the running engine"
    return 0
  fi
  if ! command -v dockerd > /dev/null || ! command -v docker-compose > /dev/null ||
     ! command -v debootstrap > /dev/null || ! command -v iptables-save > /dev/null; then
    echo "docker_engine: installing docker.io, docker-compose, debootstrap, iptables"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      docker.io docker-compose debootstrap iptables > /dev/null || return 1
  fi
  DOCKER_ENGINE_STATE=$(mktemp -d /tmp/dd-docker-engine.XXXXXX)
  local state=$DOCKER_ENGINE_STATE
  iptables-save > "$state/iptables.rules"
  iptables -S FORWARD | head -1 > "$state/forward_policy"
  cat /proc/sys/net/ipv4/ip_forward > "$state/ip_forward"
  if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
    cat /proc/sys/net/bridge/bridge-nf-call-iptables > "$state/bridge_nf"
  fi
  cat > "$state/daemon.json" <<'JSON'
{
  "bip": "198.19.254.1/24",
  "default-address-pools": [{"base": "198.19.0.0/17", "size": 24}],
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m"}
}
JSON
  dockerd --config-file "$state/daemon.json" --pidfile "$state/dockerd.pid" \
    > "$state/dockerd.log" 2>&1 &
  echo $! > "$state/pid"
  local i
  for i in $(seq 1 60); do
    if docker info > /dev/null 2>&1; then
      echo "docker_engine: started dockerd (bridge 198.19.254.1/24, pools 198.19.0.0/17)"
      return 0
    fi
    sleep 1
  done
  echo "docker_engine: dockerd did not start; its log:" >&2
  tail -20 "$state/dockerd.log" >&2
  docker_engine_down
  return 1
}

docker_engine_down() {
  local state=$DOCKER_ENGINE_STATE
  [ -n "$state" ] || return 0
  local pid
  pid=$(cat "$state/pid" 2> /dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2> /dev/null; then
    kill -TERM "$pid"
    local i
    for i in $(seq 1 30); do kill -0 "$pid" 2> /dev/null || break; sleep 1; done
    kill -KILL "$pid" 2> /dev/null || true
  fi
  # containerd-shims and the bridge outlive a stopped dockerd.
  ip link del docker0 2> /dev/null || true
  local link
  for link in $(ip -o link show type bridge | awk -F': ' '{print $2}' | grep '^br-'); do
    ip link del "$link" 2> /dev/null || true
  done
  # Back to the saved rules: dockerd's chains go, and a table the save did
  # not list (none existed) is left empty with the default ACCEPT policies.
  local table chain
  for table in filter nat; do
    iptables -t "$table" -F
    iptables -t "$table" -X
  done
  for chain in INPUT FORWARD OUTPUT; do iptables -P "$chain" ACCEPT; done
  iptables-restore < "$state/iptables.rules"
  cat "$state/ip_forward" > /proc/sys/net/ipv4/ip_forward
  if [ -f "$state/bridge_nf" ]; then
    cat "$state/bridge_nf" > /proc/sys/net/bridge/bridge-nf-call-iptables
  fi
  local policy status=0
  policy=$(iptables -S FORWARD | head -1)
  if [ "$policy" != "$(cat "$state/forward_policy")" ]; then
    echo "docker_engine: FORWARD policy is '$policy', was '$(cat "$state/forward_policy")'" >&2
    status=1
  fi
  echo "docker_engine: stopped dockerd; FORWARD policy ${policy##* }," \
       "ip_forward $(cat /proc/sys/net/ipv4/ip_forward), as before"
  rm -rf "$state"
  DOCKER_ENGINE_STATE=""
  return $status
}
