#!/usr/bin/env bash
# Utilisation of outer-step training over home links (issue 13, Part 3.3):
# PEERS simulated peers (trainer/collab/bench:simulated_peer: the real
# coordinator, butterfly, outer steps and overlap; the model a vector of
# SD 1.5's UNet size whose local step takes the H200's measured step time),
# each in its own network namespace behind a MBIT link (both directions),
# the coordinator and dataset service behind an uncapped one. For every H
# in HS: OUTER_STEPS outer steps; reports per row the share of wall time in
# (simulated) compute, over the whole run (first local step to the end,
# the last exchange included) and in the steady state (the outer steps
# after the first two and before the last: their local steps' compute
# against the wall time they took; period_s: wall time per outer step
# there; busy: the share of that wall time the peers spent in local steps
# as they measured them, so 1 - busy is time spent waiting for the network
# or the coordinator, and busy - steady is local steps running longer than
# the step time on this machine's shared cores), the bytes each peer
# uploaded per outer step, and the utilisation the link predicts,
# min(1, compute / (bytes uploaded / rate)). Baseline in the same run: the
# same peers with uncapped links (this machine's CPU is then the limit).
#
# Model and step are both divided by SCALE where memory requires it (the
# ratio of compute to exchange is kept): SD 1.5's UNet has 859,520,964
# weights; the H200 step is 0.364 s at batch 32 (../shared/notes/gpu.md).
# DILATE > 1 slows the step and the links by the same factor (the ratio of
# compute to transfer is kept) to give the averaging's CPU work, which here
# runs for all PEERS on this machine's few cores instead of on each peer's
# own, that much more time; the cpu_s column says how much each peer used.
#
#   tools/bench/utilisation_bench.sh [OUT]
#   PEERS=8 MBIT=100 SCALE=16 DILATE=1 HS="32 100 250" OUTER_STEPS=4 CODEC=blockwise8bit
# Needs root (ip netns, tc).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
out=$(realpath -m "${1:-out/utilisation-bench}")
PEERS=${PEERS:-8}
MBIT=${MBIT:-100}
SCALE=${SCALE:-16}
DILATE=${DILATE:-1}
HS=${HS:-"32 100 250"}
OUTER_STEPS=${OUTER_STEPS:-4}
CODEC=${CODEC:-blockwise8bit}
BATCH=32
elements=$((859520964 / SCALE))
step_ms=$(python3 -c "print(364 / $SCALE * $DILATE)")
link_mbit=$(python3 -c "print(f'{$MBIT / $DILATE:g}')")

bazel build //trainer/collab/bench:simulated_peer //trainer/tools:make_shapes_dataset \
  //services/coordinator:coordinator //services/dataset:dataset_server >/dev/null
rm -rf "$out"
mkdir -p "$out/bin"
for b in trainer/collab/bench/simulated_peer trainer/tools/make_shapes_dataset \
         services/coordinator/coordinator services/dataset/dataset_server; do
  cp "$repo/bazel-bin/$b" "$out/bin/"
done
bin="$out/bin"
openssl rand -hex 32 > "$out/token"
"$bin/make_shapes_dataset" --out_dir="$out/data" --num_samples=64 --width=32 --height=32 >/dev/null

source tools/bench/netns_lib.sh
hosts=(ddctl)
for i in $(seq 1 "$PEERS"); do hosts+=("ddbench$i"); done
cleanup() {
  pkill -f "$bin/" 2>/dev/null || true
  netns_down "${hosts[@]}"
}
trap cleanup EXIT

# Brings up the hosts with links of $1 Mbit/s (0: uncapped).
hosts_up() {
  netns_down "${hosts[@]}"
  netns_bridge_up
  netns_host_add ddctl 198.18.0.100 0
  for i in $(seq 1 "$PEERS"); do netns_host_add "ddbench$i" "198.18.0.$i" "$1"; done
}
ips=(198.18.0.100)
for i in $(seq 1 "$PEERS"); do ips+=("198.18.0.$i"); done
netns_tls_certs "$out" "${ips[@]}"
tls=(--auth_token_file="$out/token" --tls_cert="$out/cert.pem" --tls_key="$out/key.pem"
     --tls_ca="$out/ca.pem")

# One run: $1 = label, $2 = H, $3 = link Mbit/s. Prints one result row.
run() {
  local label=$1 h=$2 mbit=$3 dir="$out/$1"
  mkdir -p "$dir"
  hosts_up "$mbit"
  echo "{\"run_id\": \"utilisation-$label\", \"sync\": \"outer\", \"local_steps\": $h," \
       "\"target_batch_size\": $((PEERS * BATCH * h)), \"max_steps\": $OUTER_STEPS," \
       "\"codec\": \"$CODEC\"}" > "$dir/run.json"
  ip netns exec ddctl "$bin/dataset_server" --dataset_dir="$out/data" --work_dir="$dir/dwork" \
    --host=198.18.0.100 --port=50051 --port_file="$dir/dport" "${tls[@]}" > "$dir/dataset.log" 2>&1 &
  for _ in $(seq 1 300); do [ -s "$dir/dport" ] && break; sleep 0.1; done
  ip netns exec ddctl "$bin/coordinator" --config="$dir/run.json" --db_dir="$dir/ledger" \
    --dataset_address=198.18.0.100:50051 --host=198.18.0.100 --port=50050 \
    --port_file="$dir/cport" --round_timeout=900s "${tls[@]}" > "$dir/coordinator.log" 2>&1 &
  for _ in $(seq 1 300); do [ -s "$dir/cport" ] && break; sleep 0.1; done
  local pids=()
  for i in $(seq 1 "$PEERS"); do
    ip netns exec "ddbench$i" "$bin/simulated_peer" --coordinator=198.18.0.100:50050 \
      --listen="198.18.0.$i:7000" --peer_name="p$i" --elements=$elements --step_ms="$step_ms" \
      --batch_size=$BATCH --sender_timeout_s=300 --reducer_timeout_s=600 "${tls[@]}" \
      > "$dir/p$i.json" 2> "$dir/p$i.log" &
    pids+=($!)
  done
  local status=0
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  pkill -TERM -f "$bin/coordinator" || true
  pkill -TERM -f "$bin/dataset_server" || true
  wait 2>/dev/null || true
  if [ $status -ne 0 ]; then echo "$label: a peer failed; see $dir/p*.log" >&2; tail -3 "$dir"/p*.log >&2; exit 1; fi
  hashes=$(grep -ho 'final parameters [0-9a-f]*' "$dir"/p*.log | sort -u | wc -l)
  [ "$hashes" -eq 1 ] || { echo "$label: the peers ended with $hashes different weights" >&2; exit 1; }
  python3 - "$dir" "$PEERS" "$h" "$step_ms" "$mbit" "$label" <<'PY'
import json, statistics, sys
d, peers, h, step_ms, mbit, label = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
cpu = statistics.mean(json.loads(open(f"{d}/p{i}.json").read())["cpu_seconds"] for i in range(1, peers + 1))
rows = [json.loads(open(f"{d}/p{i}.json").read()) for i in range(1, peers + 1)]
whole = statistics.mean(r["utilisation"] for r in rows)
# Steady state: the local steps that started while the shared weights were
# neither one of the first two versions nor the last (no start-up: the
# first round also opens the connections; no final exchange), against the
# wall time their metrics rows cover; and the mean wall time per outer step
# there. With fewer than 5 versions, only the first and the last are left
# out.
steady_steps, steady_s, busy_s, periods = 0, 0.0, 0.0, []
for r in rows:
    all_groups = r["outer_groups"]
    groups = all_groups[2:-1] if len(all_groups) >= 5 else all_groups[1:-1]
    steady_steps += sum(g["local_steps"] for g in groups)
    steady_s += sum(g["seconds"] for g in groups)
    busy_s += sum(g["busy_seconds"] for g in groups)
    if groups:
        periods.append(sum(g["seconds"] for g in groups) / len(groups))
period = statistics.median(periods) if periods else float("nan")
compute = h * step_ms / 1000
steady = steady_steps * step_ms / 1000 / steady_s if steady_s > 0 else float("nan")
busy = busy_s / steady_s if steady_s > 0 else float("nan")
outer = int(json.load(open(f"{d}/run.json"))["max_steps"])
# A peer's upload per round: its parts to the reducers (bytes_sent) and its
# reducer's means to the other members (by symmetry, what it receives).
up = statistics.mean(r["bytes_sent"] + r["bytes_received"] for r in rows) / outer
predicted = min(1.0, compute / (up * 8 / (mbit * 1e6))) if mbit > 0 else 1.0
print(f"{label:<14} {h:>4} {'uncapped' if mbit == 0 else f'{mbit:g}M':>9} {compute:>9.2f} "
      f"{period:>9.2f} {whole:>8.3f} {steady:>8.3f} {busy:>6.3f} {up / 1e6:>10.2f} {predicted:>9.3f} {cpu / outer:>7.2f}")
PY
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "$PEERS peers, links ${link_mbit} Mbit/s each way; model $elements weights (SD 1.5 UNet / $SCALE)," \
     "local step ${step_ms} ms (H200 at batch 32 / $SCALE, x $DILATE); codec $CODEC; $OUTER_STEPS outer steps per row"
printf "%-14s %4s %9s %9s %9s %8s %8s %6s %10s %9s %7s\n" row H link compute_s period_s whole \
  steady busy MB_up/outer predicted cpu_s
for h in $HS; do run "h$h" "$h" "$link_mbit"; done
run "uncapped-h${HS%% *}" "${HS%% *}" 0
