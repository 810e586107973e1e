#!/usr/bin/env bash
# The coordinator's status page in a real browser (run by tests/run_all.sh):
# a collaboration like the demo's (dataset service, coordinator with
# --http_port, two trainer peers fine-tuning the shipped base model) runs;
# one trainer's /metrics must show its steps and the parts it reduced;
# headless Chromium (Debian's, installed when missing) loads the page, lets
# its JavaScript poll /api/state, and dumps the DOM it built; the test checks
# the DOM (the run's step, both peers in the peers table, a loss curve with
# the steps so far, the chunk grid, rounds the members reported applied, the
# sample grid the designated writer uploaded, whose /sample.png must decode
# to the size the page states), and saves a screenshot in
# out/status_page/ (docs/images/status_page.png is one of these).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
if ! command -v chromium > /dev/null; then
  echo "status_page_test: installing chromium"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium > /dev/null
fi
bazel ${BAZEL_STARTUP:-} build //services/dataset:dataset_server //services/coordinator:coordinator \
  //services/coordinator:ddctl //trainer:train //trainer/tools:make_shapes_dataset 2>&1 |
  grep -v linux-sandbox | tail -1
bin=$(bazel ${BAZEL_STARTUP:-} info bazel-bin 2> /dev/null)
out="$repo/out/status_page"
rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d /tmp/dd-status-page.XXXXXX)
pids=()
cleanup() {
  # Fixtures only (their shutdown is tested elsewhere); trainers would retry
  # a stopped coordinator for minutes.
  kill -KILL "${pids[@]}" 2> /dev/null || true
  wait "${pids[@]}" 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
source deploy/local/wait_for_server.sh

openssl rand -hex 32 > "$work/token"
"$bin/trainer/tools/make_shapes_dataset" --out_dir="$work/data" --num_samples=256 --width=64 \
  --height=64 > /dev/null
"$bin/services/dataset/dataset_server" --dataset_dir="$work/data" --work_dir="$work/dswork" \
  --host=127.0.0.1 --port=0 --port_file="$work/ds_port" --chunk_size=16 \
  --auth_token_file="$work/token" > "$work/dataset.log" 2>&1 &
pids+=($!)
dataset=$(wait_for_server "$work/ds_port")
cat > "$work/run.json" <<JSON
{"run_id": "status-page", "model": "tiny", "target_batch_size": 16, "max_steps": 400, "codec": "fp16"}
JSON
"$bin/services/coordinator/coordinator" --config="$work/run.json" --db_dir="$work/ledger" \
  --dataset_address="$dataset" --host=127.0.0.1 --port=0 --port_file="$work/port" \
  --http_port=0 --http_port_file="$work/http_port" --auth_token_file="$work/token" \
  > "$work/coordinator.log" 2>&1 &
pids+=($!)
coordinator=$(wait_for_server "$work/port")
page="http://127.0.0.1:$(cat "$work/http_port")/"
for name in alice bob; do
  # alice also serves her /metrics (checked below).
  http=()
  [ "$name" = alice ] && http=(--http_port=0 --http_port_file="$work/alice_http_port")
  "$bin/trainer/train" "${http[@]}" --coordinator="$coordinator" --auth_token_file="$work/token" \
    --peer_name="$name" --model_dir=deploy/local/shapes-tiny-base --output_dir="$work/$name" \
    --batch_size=8 --resolution=64 --lr=1e-4 --max_local_samples_per_step=8 --save_steps=1000 \
    --image_log_steps=3 --sample_steps=4 --sample_prompts="a red square|a blue circle" \
    --seed=0 --dataloader_num_workers=1 \
    > "$work/$name.log" 2>&1 &
  pids+=($!)
done

echo "== waiting for 5 global steps in the run's history and a sample grid"
ddctl=("$bin/services/coordinator/ddctl" --coordinator="$coordinator" --auth_token_file="$work/token")
for i in $(seq 1 150); do
  steps=$("${ddctl[@]}" history 2> /dev/null | awk 'NR > 1 && $3 == 2' | wc -l)
  [ "$steps" -ge 5 ] && [ -s "$work/ledger/newest_sample.png" ] && break
  sleep 2
done
[ "$steps" -ge 5 ] || { echo "FAIL: no history after 5 min"; tail -n 5 "$work"/*.log; exit 1; }
[ -s "$work/ledger/newest_sample.png" ] || {
  echo "FAIL: no sample grid reached the coordinator"; grep -h "sample" "$work"/*.log | tail; exit 1; }
"${ddctl[@]}" history --points=5 | sed 's/^/   /'

echo "== a trainer's /metrics (alice)"
python3 - "http://127.0.0.1:$(cat "$work/alice_http_port")/metrics" <<'PY'
import re, sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
values = {}
for line in text.splitlines():
    if line and not line.startswith("#"):
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
step = values.get("dd_trainer_step", 0)
loss = values.get("dd_trainer_loss", -1)
parts = sum(v for k, v in values.items() if k.startswith("grpc_server_handled_total")
            and 'grpc_method="ReducePart"' in k and 'grpc_code="OK"' in k)
print(f"   dd_trainer_step {step:.0f}, dd_trainer_loss {loss:.4f}, ReducePart calls served {parts:.0f}")
if step < 1 or not (0 < loss < 10) or parts < 1:
    sys.exit("FAIL: the trainer's metrics do not show its training and averaging")
PY

echo "== headless Chromium: $page"
browser=(chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage
         --no-first-run --user-data-dir="$work/chromium" --virtual-time-budget=6000)
"${browser[@]}" --dump-dom "$page" > "$out/dom.html" 2> "$work/chromium.log" || {
  tail -20 "$work/chromium.log"; exit 1; }
"${browser[@]}" --window-size=1280,1350 --screenshot="$out/status_page.png" "$page" \
  > /dev/null 2>> "$work/chromium.log" || true

echo "== the page as the browser built it"
python3 - "$out/dom.html" "${page}sample.png" <<'PY'
import re, struct, sys, urllib.request
from html.parser import HTMLParser

class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.text, self.peers, self.polylines, self.chunks = [], {}, [], {}, 0
        self.in_peer, self.cells = False, []
        self.applied, self.sample = 0, None
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.stack.append(a.get("id"))
        if tag == "tr" and a.get("class") == "peer":
            self.in_peer, self.cells = True, []
        if tag == "polyline":
            chart = next((i for i in reversed(self.stack) if i), None)
            self.polylines[chart] = len(a.get("points", "").split())
        if tag == "span" and "chunk-grid" in self.stack:
            self.chunks += 1
        if tag == "td" and a.get("class") == "applied":
            self.applied += 1
        if tag == "img" and a.get("id") == "sample-grid":
            self.sample = a
    def handle_endtag(self, tag):
        if self.stack:
            self.stack.pop()
        if tag == "tr" and self.in_peer:
            self.peers.append(self.cells)
            self.in_peer = False
    def handle_data(self, data):
        ident = next((i for i in reversed(self.stack) if i), None)
        if ident:
            self.text[ident] = self.text.get(ident, "") + data
        if self.in_peer:
            self.cells.append(data)

p = Page()
p.feed(open(sys.argv[1]).read())
failures = []
step = int(p.text.get("global-step", "0").strip() or 0)
names = sorted(c[0] for c in p.peers if c)
print(f"   global step {step}; peers {names}; loss curve {p.polylines.get('loss-chart', 0)} points;"
      f" samples/s curve {p.polylines.get('rate-chart', 0)} points; {p.chunks} chunks in the grid;"
      f" updated {p.text.get('updated', '').strip()}")
caption = p.text.get("sample-caption", "").strip()
print(f"   {p.applied} rounds applied; sample grid {caption}")
if step < 5: failures.append(f"global step shows {step}, expected >= 5")
if names != ["alice", "bob"]: failures.append(f"peers table shows {names}")
if p.polylines.get("loss-chart", 0) < 5: failures.append("no loss curve of >= 5 points")
if p.polylines.get("rate-chart", 0) < 5: failures.append("no samples/s curve")
if p.chunks != 16: failures.append(f"{p.chunks} chunks in the grid, expected 16")
if p.text.get("error", "").strip(): failures.append("the page shows an error: " + p.text["error"])
if p.applied < 3: failures.append(f"{p.applied} rounds shown applied, expected >= 3")
rate = float(p.text.get("rate", "0").strip() or 0)
if rate <= 0: failures.append(f"samples/s shows {rate}, expected the peers' reported rate")
size = re.search(r"(\d+)x(\d+)", caption)
if not p.sample or "hidden" in p.sample or not p.sample.get("src", "").startswith("sample.png") or not size:
    failures.append(f"no sample grid shown: {p.sample} {caption!r}")
else:
    png = urllib.request.urlopen(sys.argv[2], timeout=10).read()
    # The IHDR chunk follows the 8-byte signature: width and height, big-endian.
    if png[:8] != b"\x89PNG\r\n\x1a\n" or struct.unpack(">II", png[16:24]) != tuple(map(int, size.groups())):
        failures.append(f"/sample.png is not the {size.group(0)} PNG the page states")
for f in failures: print("FAIL: " + f)
sys.exit(1 if failures else 0)
PY
[ -s "$out/status_page.png" ] && echo "   screenshot: $out/status_page.png"
echo "status_page_test: PASSED"
