#!/usr/bin/env bash
# Outer steps against gradient averaging at equal samples (issue 13, Part 3):
# PEERS trainer processes on this machine fine-tune MODEL on the shapes data,
# each for LOCAL_STEPS optimizer steps at BATCH, in every mode of MODES:
#   gradients      average the gradient every step (codec none: the dense
#                  fp32 reference)
#   outer:H        DiLoCo: H local steps, then the pseudo-gradient averaged
#                  with OUTER_CODEC (error feedback, overlapped exchange)
# and reports per mode: global steps, wall time, bytes each peer moved per
# local step (sent + received, from metrics.jsonl) and its ratio to the
# dense reference measured in the same run, the training loss (mean over the
# last tenth of the local steps, all peers), and the held-out loss of the
# final weights (eval_loss on HELDOUT samples no peer trains, fixed draws).
# Sample grids of the final weights go to OUT/<mode>/grid.png.
#
#   tools/bench/outer_steps_bench.sh [OUT]
#   PEERS=4 LOCAL_STEPS=128 BATCH=8 MODES="gradients outer:8 outer:32 outer:128" ...
# OUTER_CODEC (default blockwise8bit; topk8bit: the sparse codec) and
# OUTER_SETTINGS (more run-config keys for the outer modes, JSON members,
# e.g. '"outer_lr": 1.0, "outer_momentum": 0') apply to every outer mode.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
out=$(realpath -m "${1:-out/outer-bench}")
PEERS=${PEERS:-4}
LOCAL_STEPS=${LOCAL_STEPS:-128}
BATCH=${BATCH:-8}
RES=${RES:-64}
LR=${LR:-1e-4}
MODES=${MODES:-"gradients outer:8 outer:32 outer:128"}
OUTER_CODEC=${OUTER_CODEC:-blockwise8bit}
MODEL=${MODEL:-deploy/local/shapes-tiny-base}
HELDOUT=${HELDOUT:-256}
PROMPTS="a red circle on a blue background|a green square on a yellow background|a blue triangle on a white background|an orange circle on a black background"

bazel build //trainer:train //trainer/tools:make_shapes_dataset //trainer/tools:eval_loss \
  //services/coordinator:coordinator //services/dataset:dataset_server //common/rpc:rpc_probe >/dev/null
rm -rf "$out"
mkdir -p "$out/bin"
# Its own copies: a later build does not swap the binaries under a run.
for b in trainer/train trainer/tools/make_shapes_dataset trainer/tools/eval_loss \
         services/coordinator/coordinator services/dataset/dataset_server common/rpc/rpc_probe; do
  mkdir -p "$out/bin/$(dirname "$b")"
  cp "$repo/bazel-bin/$b" "$out/bin/$b"
done
bin="$out/bin"
openssl rand -hex 32 > "$out/token"
samples=$((PEERS * LOCAL_STEPS * BATCH))
"$bin/trainer/tools/make_shapes_dataset" --out_dir="$out/train" --num_samples=$samples \
  --width=$RES --height=$RES --seed=11 >/dev/null
"$bin/trainer/tools/make_shapes_dataset" --out_dir="$out/heldout" --num_samples=$HELDOUT \
  --width=$RES --height=$RES --seed=12345 >/dev/null

source deploy/local/wait_for_server.sh

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "peers $PEERS, $LOCAL_STEPS local steps each at batch $BATCH ($samples samples in all), ${RES}px, lr $LR, model $MODEL"
printf "%-12s %6s %8s %14s %10s %12s %12s\n" mode global wall_s bytes/local_step vs_dense train_loss heldout_loss
dense=""
for mode in $MODES; do
  dir="$out/$mode"
  mkdir -p "$dir"
  if [ "$mode" = gradients ]; then
    config="{\"run_id\": \"bench-gradients\", \"target_batch_size\": $((PEERS * BATCH)), \"max_steps\": $LOCAL_STEPS, \"codec\": \"none\"}"
    cap=(--max_local_samples_per_step=$BATCH)
    global=$LOCAL_STEPS
  else
    h=${mode#outer:}
    global=$((LOCAL_STEPS / h))
    config="{\"run_id\": \"bench-outer-$h\", \"sync\": \"outer\", \"local_steps\": $h, \"target_batch_size\": $((PEERS * BATCH * h)), \"max_steps\": $global, \"codec\": \"$OUTER_CODEC\"${OUTER_SETTINGS:+, $OUTER_SETTINGS}}"
    cap=()
  fi
  echo "$config" > "$dir/run.json"
  "$bin/services/dataset/dataset_server" --dataset_dir="$out/train" --work_dir="$dir/dwork" \
    --host=127.0.0.1 --port=0 --port_file="$dir/dport" --chunk_size=$((BATCH * 4)) \
    --auth_token_file="$out/token" > "$dir/dataset.log" 2>&1 &
  server=$!
  daddr=$(wait_for_server "$dir/dport")
  "$bin/services/coordinator/coordinator" --config="$dir/run.json" --db_dir="$dir/ledger" \
    --dataset_address="$daddr" --host=127.0.0.1 --port=0 --port_file="$dir/cport" \
    --auth_token_file="$out/token" --round_timeout=120s > "$dir/coordinator.log" 2>&1 &
  coordinator=$!
  caddr=$(wait_for_server "$dir/cport")
  start=$(date +%s.%N)
  pids=()
  for i in $(seq 1 "$PEERS"); do
    "$bin/trainer/train" --coordinator="$caddr" --auth_token_file="$out/token" --peer_name="p$i" \
      --model_dir="$MODEL" --output_dir="$dir/p$i" --batch_size=$BATCH --resolution=$RES \
      --lr=$LR --seed=0 --save_steps=100000 --image_log_steps=100000 --sample_steps=20 \
      --sample_guidance=4 --sample_prompts="$PROMPTS" --dataloader_num_workers=1 "${cap[@]}" \
      > "$dir/p$i.log" 2>&1 &
    pids+=($!)
  done
  status=0
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  wall=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$start" "$(date +%s.%N)")
  kill -TERM $coordinator $server 2>/dev/null || true
  wait $coordinator $server 2>/dev/null || true
  if [ $status -ne 0 ]; then echo "$mode: a peer failed; see $dir/p*.log"; tail -3 "$dir"/p*.log; exit 1; fi
  hashes=$(grep -ho 'final parameters [0-9a-f]*' "$dir"/p*.log | sort -u | wc -l)
  [ "$hashes" -eq 1 ] || { echo "$mode: the peers ended with $hashes different weights"; exit 1; }
  checkpoint=$(ls -d "$dir"/p*/checkpoint-* | head -1)
  cp "$(ls "$(dirname "$checkpoint")"/samples/step-*.png | tail -1)" "$dir/grid.png"
  heldout=$("$bin/trainer/tools/eval_loss" --model_dir="$checkpoint" --dataset_dir="$out/heldout" \
    --resolution=$RES --batch_size=16 2>/dev/null | awk '{print $3}')
  read -r bytes train < <(python3 - "$dir" "$PEERS" <<'PY'
import json, sys, glob
rows_all, traffic, losses = 0, 0.0, []
for path in sorted(glob.glob(sys.argv[1] + "/p*/metrics.jsonl")):
    rows = [json.loads(l) for l in open(path)]
    # Gradient mode writes a row per global step (= local step), outer mode
    # a row per local step; both carry the bytes moved during the row.
    traffic += sum(r.get("bytes_sent", 0) + r.get("bytes_received", 0) for r in rows)
    rows_all += len(rows)
    tail = rows[len(rows) - max(1, len(rows) // 10):]
    losses += [r["loss"] for r in tail]
print(f"{traffic / rows_all:.0f} {sum(losses) / len(losses):.4f}")
PY
)
  [ -z "$dense" ] && [ "$mode" = gradients ] && dense=$bytes
  ratio=$([ -n "$dense" ] && python3 -c "import sys; print(f'1/{float(sys.argv[1]) / float(sys.argv[2]):.1f}')" "$dense" "$bytes" || echo "-")
  printf "%-12s %6s %8s %14s %10s %12s %12s\n" "$mode" "$global" "$wall" "$bytes" "$ratio" "$train" "$heldout"
done
echo "grids: $out/*/grid.png"
