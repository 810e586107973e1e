# Test hosts for the network benchmarks (sourced): network namespaces on one
# bridge, each behind a veth link capped with tc tbf in both directions, in
# 198.18.0.0/24 (RFC 2544's benchmarking range). Needs root.
#
#   source tools/bench/netns_lib.sh
#   netns_bridge_up                      # the bridge ddbr0
#   netns_host_add ddbench1 198.18.0.1 100   # a host behind a 100 Mbit/s link
#   netns_host_add ddctl 198.18.0.100 0      # a host with an uncapped link
#   netns_tls_certs DIR 198.18.0.1 ...       # ca.pem, cert.pem, key.pem for those IPs
#   netns_down ddbench1 ddctl ...            # removes the hosts and the bridge
# Environment: TBF_LATENCY (the links' queue, default 100ms), TCP_CONGESTION
# (set on each host's route with congctl; default cubic, stock Debian's and
# Ubuntu's default; empty: this kernel's default).

netns_bridge_up() {
  netns_check_forwarding
  ip link add ddbr0 type bridge
  ip link set ddbr0 up
}

# A started dockerd sets the FORWARD policy to DROP and loads br_netfilter,
# which makes iptables filter bridged frames: the hosts then cannot reach
# each other and every benchmark times out. Say so instead.
netns_check_forwarding() {
  if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] &&
     [ "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables)" = 1 ] &&
     command -v iptables > /dev/null &&
     iptables -S FORWARD 2> /dev/null | grep -q '^-P FORWARD DROP'; then
    echo "netns_lib: iptables' FORWARD policy is DROP and bridged traffic passes iptables" \
         "(br_netfilter, e.g. loaded by dockerd): the test hosts could not reach each other." \
         "Stop dockerd and run 'iptables -P FORWARD ACCEPT', or" \
         "'sysctl net.bridge.bridge-nf-call-iptables=0'." >&2
    return 1
  fi
}

# netns_host_add NAME IP MBIT: MBIT 0 leaves the link uncapped.
netns_host_add() {
  local name=$1 ip=$2 mbit=$3 veth="v$1" inner="p$1"
  ip netns add "$name"
  ip link add "$veth" type veth peer name "$inner"
  ip link set "$inner" netns "$name"
  ip link set "$veth" master ddbr0 up
  ip netns exec "$name" ip addr add "$ip/24" dev "$inner"
  ip netns exec "$name" ip link set "$inner" up
  ip netns exec "$name" ip link set lo up
  local congestion="${TCP_CONGESTION-cubic}"
  if [ -n "$congestion" ]; then
    ip netns exec "$name" ip route replace 198.18.0.0/24 dev "$inner" congctl "$congestion"
  fi
  if [ "$mbit" != 0 ]; then
    # Upload (namespace -> bridge) and download (bridge -> namespace) caps.
    ip netns exec "$name" tc qdisc add dev "$inner" root tbf rate "${mbit}mbit" burst 256kb \
      latency "${TBF_LATENCY:-100ms}"
    tc qdisc add dev "$veth" root tbf rate "${mbit}mbit" burst 256kb latency "${TBF_LATENCY:-100ms}"
  fi
}

# netns_tls_certs DIR IP...: a CA and one server certificate for all IPs.
netns_tls_certs() {
  local dir=$1 san="subjectAltName="
  shift
  for ip in "$@"; do san+="IP:$ip,"; done
  echo "${san%,}" > "$dir/san.ext"
  (cd "$dir" && openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=dd-bench-ca \
      -keyout ca.key -out ca.pem &&
    openssl req -newkey rsa:2048 -nodes -subj /CN=dd-bench -keyout key.pem -out csr.pem &&
    openssl x509 -req -in csr.pem -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
      -extfile san.ext -out cert.pem) > /dev/null 2>&1
}

netns_down() {
  for name in "$@"; do ip netns del "$name" 2> /dev/null || true; done
  ip link del ddbr0 2> /dev/null || true
}
