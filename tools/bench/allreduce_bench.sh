#!/usr/bin/env bash
# Benchmark: one butterfly all-reduce round of a float32 vector among N
# member processes, (a) on loopback and (b) with each member in its own
# network namespace behind a rate-limited link (veth + tc tbf, both
# directions), for each codec. Reports time against the lower bound
# 2 (N-1)/N * bytes / link rate. Needs root (ip netns, tc); creates its test
# hosts (198.18.0.0/24, the benchmarking range of RFC 2544) and removes them.
#
#   tools/bench/allreduce_bench.sh [MEGABYTES=256] [MBIT=200] [MEMBERS=4]
# Environment: CODECS (default: all five), ROUNDS (rounds per codec and
# link, each with fresh member processes; the median is reported, with the
# range; default 3), LOOPBACK_ONLY=1 (only the loopback rows; no root
# needed), MEMBER (another averaging_member binary, to compare two builds in
# one run), TBF_LATENCY (the links' queue, default 100ms),
# MEMBER_ARGS (extra averaging_member flags), KEEP_LOGS (a path prefix to
# keep the members' logs under), TCP_CONGESTION
# (the test hosts' TCP congestion control, set on their route with `congctl`;
# default cubic, the default of stock Debian and Ubuntu kernels; empty: this
# kernel's default, which is BBR on the dev VM).
set -euo pipefail
cd "$(dirname "$0")/../.."
mb="${1:-256}"; mbit="${2:-200}"; n="${3:-4}"
length=$(( mb * 1024 * 1024 / 4 ))
codecs="${CODECS:-none fp16 bf16 uniform8bit blockwise8bit}"
rounds="${ROUNDS:-3}"
congestion="${TCP_CONGESTION-cubic}"  # applied by netns_lib.sh
work=$(mktemp -d /tmp/dd-allreduce.XXXX)
bazel build //trainer/averaging:averaging_member 2>&1 | grep -v linux-sandbox | tail -1
member="${MEMBER:-$(pwd)/bazel-bin/trainer/averaging/averaging_member}"
openssl rand -hex 24 > "$work/token"
# The members sign their own credentials with the run's key (no coordinator here).
(umask 077 && openssl genpkey -algorithm ed25519 -out "$work/credential_key.pem")

source tools/bench/netns_lib.sh
cleanup() {
  netns_down $(for i in $(seq 1 "$n"); do echo "ddbench$i"; done)
  rm -rf "$work"
}
trap cleanup EXIT

# Runs one round; $1 = codec, $2 = mode (loopback|netns). Prints the slowest
# member's seconds and bytes sent.
run_round() {
  local codec=$1 mode=$2 pids=() addrs=()
  rm -f "$work"/port.* "$work"/spec.json "$work"/out.*
  for i in $(seq 0 $((n - 1))); do
    local cmd=("$member" --index="$i" --length="$length" --codec="$codec"
               --spec_file="$work/spec.json" --port_file="$work/port.$i"
               --auth_token_file="$work/token" --credential_key_file="$work/credential_key.pem" --sender_timeout_s=120 --reducer_timeout_s=240
               --deadline_s=600 --linger_ms=3000 ${MEMBER_ARGS:-})
    if [ "$mode" = loopback ]; then
      "${cmd[@]}" --listen=127.0.0.1:0 > "$work/out.$i" 2> "$work/log.$i" &
    else
      ip netns exec "ddbench$((i + 1))" "${cmd[@]}" --listen="198.18.0.$((i + 1)):7000" \
        --tls_cert="$work/cert.pem" --tls_key="$work/key.pem" --tls_ca="$work/ca.pem" \
        > "$work/out.$i" 2> "$work/log.$i" &
    fi
    pids+=($!)
  done
  for i in $(seq 0 $((n - 1))); do
    for _ in $(seq 1 300); do [ -s "$work/port.$i" ] && break; sleep 0.1; done
    if [ "$mode" = loopback ]; then addrs+=("\"127.0.0.1:$(cat "$work/port.$i")\"");
    else addrs+=("\"198.18.0.$((i + 1)):7000\""); fi
  done
  local ids="" shares=""
  for i in $(seq 0 $((n - 1))); do ids+="\"m$i\","; shares+="1,"; done
  printf '{"round_id": 1, "peer_ids": [%s], "addresses": [%s], "shares": [%s]}\n' \
    "${ids%,}" "$(IFS=,; echo "${addrs[*]}")" "${shares%,}" > "$work/spec.tmp"
  mv "$work/spec.tmp" "$work/spec.json"
  for p in "${pids[@]}"; do wait "$p"; done
  if [ -n "${KEEP_LOGS:-}" ]; then
    for i in $(seq 0 $((n - 1))); do cp "$work/log.$i" "$KEEP_LOGS.$mode.$codec.$i"; done
  fi
  python3 - "$work" "$n" <<'PY'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
rows = [json.loads(open(f"{work}/out.{i}").read()) for i in range(n)]
sums = {r["checksum"] for r in rows}
print("%.3f %d %.4f %d %.1f" % (max(r["seconds"] for r in rows), max(r["bytes_sent"] for r in rows),
                          min(r["fraction_averaged"] for r in rows), len(sums),
                          sum(r["cpu_seconds"] for r in rows)))
PY
}

# Reads lines whose first field is seconds; prints the median line with the
# fastest and slowest seconds appended.
median_line() {
  sort -n | python3 -c "
import sys
rows = [l.split() for l in sys.stdin if l.strip()]
print(' '.join(rows[(len(rows) - 1) // 2] + [rows[0][0], rows[-1][0]]))"
}

# Runs `rounds` rounds of codec $1 in mode $2; prints median_line of them.
run_rounds() {
  for _ in $(seq 1 "$rounds"); do run_round "$1" "$2"; done | median_line
}

setup_netns() {
  netns_bridge_up
  local ips=()
  for i in $(seq 1 "$n"); do
    netns_host_add "ddbench$i" "198.18.0.$i" "$mbit"
    ips+=("198.18.0.$i")
  done
  netns_tls_certs "$work" "${ips[@]}"
}

bound=$(python3 -c "print(2*($n-1)/$n*$mb*1024*1024*8/($mbit*1e6))")
echo "vector: $mb MB float32 ($length values), $n members; link: $mbit Mbit/s each way;" \
  "TCP congestion control: ${congestion:-$(cat /proc/sys/net/ipv4/tcp_congestion_control)}"
echo "lower bound without compression: 2(N-1)/N * bytes / rate = ${bound} s"
echo "rounds per row: $rounds (seconds: the median round, then the fastest-slowest)"
printf "%-8s %-14s %9s %14s %14s %9s %10s %7s %9s\n" mode codec seconds range bytes_sent averaged \
  bound/time agree cpu_s_all
for codec in $codecs; do
  read -r secs bytes frac sums cpu lo hi < <(run_rounds "$codec" loopback)
  printf "%-8s %-14s %9.2f %14s %14d %9.4f %10s %7s %9s\n" loopback "$codec" "$secs" "$lo-$hi" \
    "$bytes" "$frac" - "$([ "$sums" = 1 ] && echo yes || echo NO)" "$cpu"
done
[ "${LOOPBACK_ONLY:-0}" = 1 ] && exit 0
setup_netns
# Baseline in the same run: one plain TCP stream from member 1 to member 2
# through the same capped links.
ip netns exec ddbench2 python3 -c "
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('198.18.0.2', 9999)); s.listen(1); c, _ = s.accept()
while c.recv(1 << 20): pass
c.sendall(b'k')" &
sleep 0.5
tcp=$(ip netns exec ddbench1 python3 -c "
import socket, time
s = socket.create_connection(('198.18.0.2', 9999)); buf = b'x' * (1 << 20); t = time.time()
for _ in range(64): s.sendall(buf)
s.shutdown(socket.SHUT_WR); s.recv(1); print('%.1f' % (64 * 8 * 1.048576 / (time.time() - t)))")
wait
echo "baseline: one TCP stream through the capped link: $tcp Mbit/s"
echo "achievable bound at that rate: $(python3 -c "print('%.2f' % ($bound * $mbit / $tcp))") s"
# Second baseline: the same bytes in the butterfly's pattern over plain TCP
# (every member sends 2*bytes/N to each other member at once).
per_peer=$(( 2 * mb * 1024 * 1024 / n ))
a2a_times=()
for _ in $(seq 1 "$rounds"); do
  start_at=$(python3 -c "import time; print(time.time() + 1.5)")
  for i in $(seq 0 $((n - 1))); do
    ip netns exec "ddbench$((i + 1))" python3 tools/bench/tcp_all_to_all.py "$i" "$n" "$per_peer" "$start_at" \
      > "$work/a2a.$i" &
  done
  wait
  a2a_times+=("$(cat "$work"/a2a.* | sort -n | tail -1)")
done
read -r a2a a2a_lo a2a_hi < <(printf '%s\n' "${a2a_times[@]}" | median_line)
echo "baseline: the same exchange in plain TCP (all-to-all, no reduction): median $a2a s" \
  "($a2a_lo-$a2a_hi), $(python3 -c "print('%.3f' % ($bound / $a2a))") of the nominal bound"
for codec in $codecs; do
  read -r secs bytes frac sums cpu lo hi < <(run_rounds "$codec" netns)
  ratio=$(python3 -c "print('%.3f' % ($bound/$secs))")
  printf "%-8s %-14s %9.2f %14s %14d %9.4f %10s %7s %9s\n" "${mbit}M" "$codec" "$secs" "$lo-$hi" \
    "$bytes" "$frac" "$ratio" "$([ "$sums" = 1 ] && echo yes || echo NO)" "$cpu"
done
