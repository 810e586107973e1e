#!/usr/bin/env bash
# The embedded default, on this machine, with nothing to download.
#
# Generates a captioned synthetic dataset, serves it with the dataset blob
# service (token auth on, loopback), downloads every chunk with the
# resumable, verified client while showing what a user sees (health,
# reflection, info, the chunk table, progress, a chunk's contents), starts
# the coordinator on that dataset (run state and chunk ledger with ddctl),
# then runs a collaboration on this machine: a coordinator, the dataset
# service and two trainer peers (token auth, loopback) fine-tune the small
# base model the project ships (deploy/local/shapes-tiny-base, made on the
# CPU by tools/models/make_shapes_base.sh from init_model's random weights)
# for a few minutes, averaging their gradients every global step; it shows
# the peers, equal parameter hashes, the loss, checkpoints, sample grids of
# the prompts and TensorBoard logs. DEMO_STEPS (default 100) sets the global
# steps. DEMO_SYNC=outer runs the collaboration with outer steps instead
# (DiLoCo: 8 local steps per peer, then the change of the weights averaged
# in 8 bits while the next local steps run).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)

./deploy/setup/install_deps.sh

echo "== building"
bazel build //services/dataset:dataset_server //services/dataset:dataset_fetch \
  //services/coordinator:coordinator //services/coordinator:ddctl \
  //trainer/tools:make_shapes_dataset //common/rpc:rpc_probe \
  //trainer/tools:init_model //trainer:train //trainer:sample 2>&1 | grep -v linux-sandbox | tail -2
bin="$repo/bazel-bin"

out="${DEMO_DIR:-$repo/out/demo}"

source deploy/local/wait_for_server.sh
rm -rf "$out"
mkdir -p "$out"
umask 077
openssl rand -hex 32 > "$out/token"
umask 022

echo "== generating a synthetic dataset in $out/data"
"$bin/trainer/tools/make_shapes_dataset" --out_dir="$out/data" --num_samples=512 \
  --width=128 --height=128 --image_format=mixed --subdirs=4
"$bin/trainer/tools/make_shapes_dataset" --out_dir="$out/data/shards" --num_samples=128 \
  --width=128 --height=128 --shard_size=64 --seed=1
head -c 200 "$out/data/part-00/000000000.txt"; echo "   <- a caption"

echo "== starting dataset_server (loopback, token required)"
"$bin/services/dataset/dataset_server" --dataset_dir="$out/data" --work_dir="$out/work" \
  --host=127.0.0.1 --port=0 --port_file="$out/port" --chunk_size=64 --frame_kib=64 \
  --name="Shapes demo" --description="coloured shapes on coloured backgrounds" \
  --auth_token_file="$out/token" > "$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
addr=$(wait_for_server "$out/port")
grep -E "indexing|indexed|listening" "$out/server.log" | sed 's/^[^]]*] //'

echo "== health (no token needed): $("$bin/common/rpc/rpc_probe" --target="$addr" health)"
echo "== services through reflection (what grpcurl lists):"
"$bin/common/rpc/rpc_probe" --target="$addr" --auth_token_file="$out/token" list | sed 's/^/   /'
echo "== a call without the token is refused:"
"$bin/services/dataset/dataset_fetch" --server="$addr" --allow_unauthenticated info 2>&1 | sed 's/^/   /' || true

fetch=("$bin/services/dataset/dataset_fetch" --server="$addr" --auth_token_file="$out/token")
echo "== GetInfo"
"${fetch[@]}" info | grep -vE "^  (path|reason)" | sed 's/^/   /'
echo "== ListChunks"
"${fetch[@]}" list | sed 's/^/   /'
echo "== downloading every chunk (each attempt cut after 100 KB to show resuming)"
"${fetch[@]}" --interrupt_after_bytes=100000 get-all "$out/chunks" 2>&1 | sed 's/^[^]]*] //; s/^/   /'
echo "== chunk 2 is a WebDataset tar:"
{ tar tvf "$out/chunks/chunk-000002.tar" || true; } | head -4 | sed 's/^/   /'

echo "== starting the coordinator (RocksDB ledger in $out/ledger) on that dataset"
cat > "$out/run.json" <<JSON
{"run_id": "demo-shapes", "model": "tiny", "target_batch_size": 64}
JSON
openssl rand -hex 32 > "$out/admin_token"
"$bin/services/coordinator/coordinator" --config="$out/run.json" --db_dir="$out/ledger" \
  --dataset_address="$addr" --host=127.0.0.1 --port=0 --port_file="$out/coordinator_port" \
  --auth_token_file="$out/token" --admin_token_file="$out/admin_token" \
  > "$out/coordinator.log" 2>&1 &
coordinator=$!
trap 'kill $server $coordinator 2>/dev/null || true' EXIT
caddr=$(wait_for_server "$out/coordinator_port")
ddctl=("$bin/services/coordinator/ddctl" --coordinator="$caddr" --auth_token_file="$out/token")
echo "== ddctl status"
"${ddctl[@]}" status | sed 's/^/   /'
echo "== ddctl chunks (first rows)"
{ "${ddctl[@]}" chunks || true; } | head -5 | sed 's/^/   /'

kill -TERM $coordinator $server
wait $coordinator || true
wait $server || true
trap - EXIT
echo "== servers stopped cleanly"

steps="${DEMO_STEPS:-100}"
echo "== the base model: deploy/local/shapes-tiny-base (tiny SD 1.x, fp16, made by tools/models/make_shapes_base.sh)"
cp -r deploy/local/shapes-tiny-base "$out/model"

echo "== collaborative training: coordinator + dataset service + two trainer peers (auth on)"
if [ "${DEMO_SYNC:-gradients}" = outer ]; then
  # Outer steps (DiLoCo): each peer takes 8 local steps of 16 images, then
  # the peers average the change of the weights (8-bit) while the next
  # local steps run; $steps counts local steps here as well.
  echo "   sync: outer steps, H = 8 local steps, 8-bit blockwise pseudo-gradients (DEMO_SYNC=outer)"
  cat > "$out/collab.json" <<JSON
{"run_id": "demo-collab", "model": "tiny", "sync": "outer", "local_steps": 8, "target_batch_size": 256, "max_steps": $(( (steps + 7) / 8 )), "codec": "blockwise8bit"}
JSON
else
  cat > "$out/collab.json" <<JSON
{"run_id": "demo-collab", "model": "tiny", "target_batch_size": 32, "max_steps": $steps, "codec": "fp16"}
JSON
fi
rm -f "$out/port" "$out/coordinator_port"
"$bin/services/dataset/dataset_server" --dataset_dir="$out/data" --work_dir="$out/work" \
  --host=127.0.0.1 --port=0 --port_file="$out/port" --chunk_size=64 \
  --auth_token_file="$out/token" > "$out/server2.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
addr=$(wait_for_server "$out/port")
"$bin/services/coordinator/coordinator" --config="$out/collab.json" --db_dir="$out/collab_ledger" \
  --dataset_address="$addr" --host=127.0.0.1 --port=0 --port_file="$out/coordinator_port" \
  --http_port=0 --http_port_file="$out/coordinator_http_port" \
  --auth_token_file="$out/token" > "$out/coordinator2.log" 2>&1 &
coordinator=$!
trap 'kill $server $coordinator 2>/dev/null || true' EXIT
caddr=$(wait_for_server "$out/coordinator_port")
ddctl=("$bin/services/coordinator/ddctl" --coordinator="$caddr" --auth_token_file="$out/token")
peers=()
for name in alice bob; do
  "$bin/trainer/train" --coordinator="$caddr" --auth_token_file="$out/token" --peer_name="$name" \
    --model_dir="$out/model" --output_dir="$out/peer-$name" --batch_size=16 --resolution=64 \
    --lr=1e-4 --lr_scheduler=cosine --lr_warmup_steps=5 --max_local_samples_per_step=16 \
    --caption_dropout=0.1 --save_steps=50 --image_log_steps=50 --sample_steps=20 \
    --sample_guidance=4 --train_text_encoder --seed=0 \
    --sample_prompts="a red circle on a blue background|a green square on a yellow background|a blue triangle on a white background|an orange circle on a black background" \
    --dataloader_num_workers=1 > "$out/peer-$name.log" 2>&1 &
  peers+=($!)
done
trap 'kill $server $coordinator ${peers[*]} 2>/dev/null || true' EXIT
echo "   two peers (alice, bob) at batch 16 each; the coordinator opens a round every 32 samples"
sleep 30
echo "== ddctl peers (while training)"
"${ddctl[@]}" peers 2>/dev/null | sed 's/^/   /' || true
status_url="http://127.0.0.1:$(cat "$out/coordinator_http_port")/"
echo "== the run's status page (open it in a browser while the peers train): $status_url"
metrics_url="${status_url}metrics"
echo "== the coordinator's Prometheus metrics: $metrics_url (some of them)"
python3 - "$metrics_url" <<'PY' || true
import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
for line in text.splitlines():
    if line.startswith(("dd_coordinator_chunks", "dd_coordinator_global_step",
                        "dd_coordinator_peers{reachability=\"reachable\"}")) or (
            line.startswith("grpc_server_handled_total") and "ReportProgress" in line):
        print("   " + line)
PY
echo "== progress of alice"
status=0
while kill -0 "${peers[0]}" 2>/dev/null || kill -0 "${peers[1]}" 2>/dev/null; do
  { grep "progress_line" "$out/peer-alice.log" || true; } | tail -1 | sed 's/^[^]]*] /   /'
  sleep 20
done
for pid in "${peers[@]}"; do wait "$pid" || status=1; done
[ $status -eq 0 ] || { echo "a peer failed; see $out/peer-*.log"; tail -5 "$out"/peer-*.log; exit 1; }
echo "== both peers applied the same updates (parameter hash after the last step):"
for name in alice bob; do
  echo "   $name: $(grep -o 'final parameters [0-9a-f]*' "$out/peer-$name.log" | cut -c18-33)"
done
echo "== ddctl status"
"${ddctl[@]}" status | sed 's/^/   /'
echo "== ddctl history (the run's last global steps, from the peers' telemetry)"
"${ddctl[@]}" history --points=5 | sed 's/^/   /'
writer=$(ls -d "$out"/peer-*/checkpoint-* 2>/dev/null | head -1 | xargs dirname)
unit="global steps"
[ "${DEMO_SYNC:-gradients}" = outer ] && unit="local steps"
echo "== the loss ($writer/metrics.jsonl, mean of 10 $unit):"
python3 - "$writer/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
loss = [r["loss"] for r in rows]
n = len(loss)
for start in range(0, n, max(1, n // 6)):
    chunk = loss[start:start + 10]
    mean = sum(chunk) / len(chunk)
    print(f"   steps {start + 1:4d}-{start + len(chunk):4d}  loss {mean:.4f}  " + "#" * int(mean * 60))
PY
kill -TERM $coordinator $server
wait $coordinator || true
wait $server || true
trap - EXIT
echo "== results"
echo "   checkpoints (written by the designated peer only): $(ls -d "$writer"/checkpoint-* | tr '\n' ' ')"
# The newest grid and checkpoint (in outer mode the trainer counts local
# steps: H per outer step).
grid=$(ls "$writer"/samples/step-*.png | tail -1)
last_checkpoint=$(ls -d "$writer"/checkpoint-* | sort -t- -k2 -n | tail -1)
cp "$grid" "$out/grid.png"
echo "   sample grids:  $writer/samples/ (the last one also as $out/grid.png), one image per prompt:"
sed 's/^/     /' "$writer/samples/prompts.txt"
echo "   metrics:       $out/peer-*/metrics.jsonl (loss, lr, members, averaging time, bytes)"
echo "   TensorBoard:   tensorboard --logdir $out (one run per peer)"
echo "   sample from a checkpoint:  bazel-bin/trainer/sample --model_dir=$last_checkpoint --prompt='a red circle on a blue background' --width=64 --height=64 --out=x.png"
echo "== everything is under $out"
