#include "services/coordinator/status_page.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"

namespace dd::coordinator {
namespace {

constexpr int kMaxChunksShown = 20000;

template <typename M>
std::string Json(const absl::StatusOr<M>& m) {
  if (!m.ok()) return "null";
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  if (!google::protobuf::util::MessageToJsonString(*m, &out, options).ok()) return "null";
  return out;
}

// `s` as a JSON string literal, escaped.
std::string JsonString(const std::string& s) {
  google::protobuf::Value value;
  value.set_string_value(s);
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(value, &out).ok()) return "\"\"";
  return out;
}

// The page. Plain HTML, CSS and JavaScript; everything it draws comes from
// /api/state. Element ids are what tests/ui/status_page_test.sh reads.
constexpr char kPage[] = R"HTML(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>distributed-diffusion: run status</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2430; background: #f6f7f9; }
  h1 { font-size: 1.4em; margin: 0 0 .2em; }
  h2 { font-size: 1.05em; margin: 1.2em 0 .4em; }
  .cards { display: flex; flex-wrap: wrap; gap: .8em; }
  .card { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: .6em .9em; min-width: 9em; }
  .card b { display: block; font-size: 1.3em; }
  .bar { height: 10px; background: #e3e7ee; border-radius: 5px; overflow: hidden; margin-top: .3em; }
  .bar div { height: 100%; background: #3b7ddd; }
  .charts { display: flex; flex-wrap: wrap; gap: 1em; }
  svg { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; }
  table { border-collapse: collapse; background: #fff; }
  th, td { border: 1px solid #dde1e7; padding: .25em .6em; text-align: left; }
  th { background: #eef1f5; }
  #chunk-grid { display: flex; flex-wrap: wrap; gap: 2px; max-width: 60em; }
  #chunk-grid span { width: 10px; height: 10px; border-radius: 2px; display: inline-block; }
  .pending { background: #cfd5de; } .leased { background: #f0b429; } .done { background: #2f9e44; }
  .bad { background: #d9480f; }
  .muted { color: #68717e; }
  #error { color: #c92a2a; }
  .failed { color: #c92a2a; } .applied { color: #2f9e44; }
  #sample-grid { min-width: 256px; max-width: 100%; image-rendering: pixelated; border: 1px solid #dde1e7; }
</style>
</head>
<body>
<h1>distributed-diffusion <span class="muted" id="run-id"></span></h1>
<div class="muted">updated <span id="updated">never</span> <span id="error"></span></div>
<div class="cards">
  <div class="card">global step<b id="global-step">-</b></div>
  <div class="card">epoch<b id="epoch">-</b>
    <div class="bar"><div id="epoch-bar" style="width:0%"></div></div>
    <span class="muted" id="epoch-eta"></span></div>
  <div class="card">samples trained<b id="samples">-</b></div>
  <div class="card">samples/s<b id="rate">-</b></div>
  <div class="card">live peers<b id="live-peers">-</b></div>
</div>
<h2>Loss and throughput by global step</h2>
<div class="charts">
  <svg id="loss-chart" width="520" height="220" role="img" aria-label="loss"></svg>
  <svg id="rate-chart" width="520" height="220" role="img" aria-label="samples per second"></svg>
</div>
<h2>Peers</h2>
<table id="peers"><thead><tr><th>name</th><th>peer</th><th>address</th><th>reachability</th>
<th>samples/s</th><th>leases</th><th>last heartbeat</th></tr></thead><tbody></tbody></table>
<h2>Chunks of this epoch <span class="muted">(grey pending, yellow leased, green done, red unreadable)</span></h2>
<div id="chunk-grid"></div>
<h2>Recent rounds</h2>
<table id="rounds"><thead><tr><th>round</th><th>global step</th><th>members</th><th>samples</th>
<th>opened</th><th>outcome</th><th>averaging</th></tr></thead><tbody></tbody></table>
<h2>Newest sample grid <span class="muted" id="sample-caption">(none yet)</span></h2>
<img id="sample-grid" alt="the newest sample grid" hidden>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token");
const query = (q) => (q || token ? "?" : "") + (q || "") + (q && token ? "&" : "") +
  (token ? "token=" + encodeURIComponent(token) : "");
const $ = (id) => document.getElementById(id);
const num = (v) => Number(v || 0);
const time = (ms) => ms > 0 ? new Date(num(ms)).toLocaleTimeString() : "-";
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})[c]);
let epochStart = null;

function chart(svg, points, key, label, color) {
  const w = svg.width.baseVal.value, h = svg.height.baseVal.value, m = 36;
  const xs = points.map((p) => num(p.step)), ys = points.map((p) => num(p[key]));
  let body = `<text x="${m}" y="16" font-size="12">${label}</text>`;
  if (points.length >= 1) {
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
    const y0 = Math.min(...ys, 0), y1 = Math.max(...ys, y0 + 1e-9);
    const px = (x) => m + (x - x0) / (x1 - x0) * (w - 2 * m);
    const py = (y) => h - m + (y0 - y) / (y1 - y0) * (h - 2 * m);
    const line = points.map((p, i) => `${px(xs[i]).toFixed(1)},${py(ys[i]).toFixed(1)}`).join(" ");
    body += `<polyline class="series" fill="none" stroke="${color}" stroke-width="1.5" points="${line}"/>` +
      `<text x="4" y="${m}" font-size="11">${y1.toPrecision(3)}</text>` +
      `<text x="4" y="${h - m}" font-size="11">${y0.toPrecision(3)}</text>` +
      `<text x="${m}" y="${h - 8}" font-size="11">step ${x0}</text>` +
      `<text x="${w - m - 60}" y="${h - 8}" font-size="11">step ${x1}</text>`;
  } else {
    body += `<text x="${m}" y="${h / 2}" font-size="12" class="muted">no steps yet</text>`;
  }
  svg.innerHTML = body;
}

function renderChunks(list, epoch) {
  const chunks = (list && list.chunks) || [];
  $("chunk-grid").innerHTML = chunks.map((c) => {
    const cls = c.bad ? "bad" : c.state === "LEASED" ? "leased" : num(c.timesTrained) > epoch ? "done" : "pending";
    return `<span class="${cls}" title="chunk ${num(c.chunkId)}: ${cls}"></span>`;
  }).join("");
}

function roundOutcome(r) {
  const o = String(r.outcome || "ROUND_PENDING").replace("ROUND_", "").toLowerCase();
  const members = r.members || [];
  const told = members.filter((m) => m.outcome && m.outcome !== "ROUND_PENDING").length;
  return `<td class="${o}">${o}${o === "pending" ? ` (${told}/${members.length} reported)` : ""}</td>` +
    `<td>${o === "applied" ? num(r.durationSeconds).toFixed(2) + " s" : "-"}</td>`;
}

function renderSample(sample) {
  if (!sample) return;
  const img = $("sample-grid");
  const src = "sample.png" + query("step=" + num(sample.step));
  if (img.dataset.step !== String(num(sample.step))) {
    img.src = src;
    img.dataset.step = String(num(sample.step));
    img.hidden = false;
  }
  $("sample-caption").textContent = `(global step ${num(sample.step)}, ${num(sample.width)}x${num(sample.height)}, ` +
    `from ${sample.peerId}, ${time(sample.unixMs)})`;
}

function render(s) {
  const run = s.run || {}, peers = (s.peers && s.peers.peers) || [];
  const rounds = (s.rounds && s.rounds.rounds) || [];
  const history = (s.history && s.history.points) || [];
  $("run-id").textContent = run.runId || "";
  $("global-step").textContent = num(run.globalStep);
  $("epoch").textContent = num(run.epoch);
  const total = num(run.numChunks), done = num(run.chunksDone);
  $("epoch-bar").style.width = total ? (100 * done / total).toFixed(1) + "%" : "0%";
  if (!epochStart || epochStart.epoch !== num(run.epoch)) epochStart = {epoch: num(run.epoch), t: Date.now(), done};
  const elapsed = (Date.now() - epochStart.t) / 1000, gained = done - epochStart.done;
  $("epoch-eta").textContent = `${done}/${total} chunks` +
    (gained > 0 && done < total ? `, epoch ETA ${Math.round((total - done) * elapsed / gained)} s` : "");
  $("samples").textContent = num(run.samplesDone);
  $("rate").textContent = num(run.samplesPerSecond).toFixed(1);
  $("live-peers").textContent = num(run.livePeers);
  chart($("loss-chart"), history, "loss", "loss (mean over peers)", "#3b7ddd");
  chart($("rate-chart"), history, "samplesPerSecond", "samples/s (collaboration)", "#2f9e44");
  $("peers").tBodies[0].innerHTML = peers.map((p) =>
    `<tr class="peer"><td>${esc(p.displayName)}</td><td>${esc(p.peerId)}</td><td>${esc(p.address) || "-"}</td>` +
    `<td>${esc(String(p.reachability || "").toLowerCase())}</td><td>${num(p.samplesPerSecond).toFixed(1)}</td>` +
    `<td>${num(p.leasedChunks)}</td><td>${time(p.lastHeartbeatUnixMs)}</td></tr>`).join("");
  $("rounds").tBodies[0].innerHTML = rounds.slice(0, 20).map((r) =>
    `<tr class="round"><td>${num(r.roundId)}</td><td>${num(r.globalStep)}</td><td>${(r.members || []).length}</td>` +
    `<td>${num(r.totalSamples)}</td><td>${time(r.openedUnixMs)}</td>${roundOutcome(r)}</tr>`).join("");
  renderSample(s.sample);
  $("updated").textContent = new Date().toLocaleTimeString();
}

async function get(path) {
  const res = await fetch(path, {cache: "no-store"});
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

// The state every 2 s; the chunk grid as often on small datasets, every
// 30 s on large ones (its listing grows with the dataset).
let chunksAt = 0;
async function poll() {
  try {
    const s = await get("api/state" + query());
    render(s);
    const chunkPeriod = num((s.run || {}).numChunks) > 2000 ? 30000 : 0;
    if (Date.now() - chunksAt >= chunkPeriod) {
      chunksAt = Date.now();
      renderChunks(await get("api/chunks" + query()), num((s.run || {}).epoch));
    }
    $("error").textContent = "";
  } catch (e) {
    $("error").textContent = "(" + e.message + ")";
  }
  setTimeout(poll, 2000);
}
poll();
</script>
</body>
</html>
)HTML";

}  // namespace

std::string ChunksJson(CoordinatorCore* core) {
  v1::ListChunksResponse chunks;
  v1::ListChunksRequest request;
  request.set_page_size(10000);
  do {
    auto page = core->ListChunks(request);
    if (!page.ok()) break;
    for (auto& c : *page->mutable_chunks()) {
      // What the page shows needs no lease ids.
      c.clear_lease_id();
      c.clear_owner_incarnation();
      *chunks.add_chunks() = std::move(c);
    }
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty() && chunks.chunks_size() < kMaxChunksShown);
  return Json(absl::StatusOr<v1::ListChunksResponse>(chunks));
}

std::string StatusJson(CoordinatorCore* core, const NewestSample* newest_sample) {
  v1::GetHistoryRequest history;
  history.set_max_points(5000);
  std::string sample = "null";
  if (std::shared_ptr<const SampleGrid> g =
          newest_sample != nullptr ? newest_sample->Get() : nullptr) {
    sample = absl::StrCat("{\"step\":", g->step, ",\"peerId\":", JsonString(g->peer_id),
                          ",\"unixMs\":", g->unix_ms, ",\"width\":", g->width,
                          ",\"height\":", g->height, "}");
  }
  return absl::StrCat("{\"run\":", Json(core->GetRunState({})),
                      ",\"peers\":", Json(core->ListPeers({}, Caller::RunToken())),
                      ",\"rounds\":", Json(core->ListRounds({})),
                      ",\"history\":", Json(core->GetHistory(history)),
                      ",\"sample\":", sample, "}");
}

metrics::HttpPages StatusPages(CoordinatorCore* core, const NewestSample* newest_sample) {
  metrics::HttpPages pages;
  pages["/"] = [] { return metrics::HttpPage{200, "text/html; charset=utf-8", kPage}; };
  pages["/api/state"] = [core, newest_sample] {
    return metrics::HttpPage{200, "application/json", StatusJson(core, newest_sample)};
  };
  pages["/api/chunks"] = [core] {
    return metrics::HttpPage{200, "application/json", ChunksJson(core)};
  };
  pages["/sample.png"] = [newest_sample] {
    std::shared_ptr<const SampleGrid> g =
        newest_sample != nullptr ? newest_sample->Get() : nullptr;
    if (g == nullptr) return metrics::HttpPage{404, "text/plain; charset=utf-8", "no sample grid yet\n"};
    return metrics::HttpPage{200, "image/png", g->png};
  };
  return pages;
}

}  // namespace dd::coordinator
