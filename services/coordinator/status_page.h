// The coordinator's live status page, on its --http_port next to /metrics:
// GET / is a self-contained page (HTML, CSS and a little JavaScript in this
// binary; nothing from a CDN, so it works offline) that polls
// GET /api/state every 2 s and draws the run's state and progress with an
// ETA, the global loss curve and samples/s over the global steps (SVG), the
// peers table, the recent rounds with their outcome and averaging time, and
// the newest sample grid (GET /sample.png); it polls GET /api/chunks for
// the chunks of the epoch as a grid (every 2 s, every 30 s past 2000
// chunks). Read-only; the HTTP server's viewer token guards every path (a
// browser passes it as ?token=).
#ifndef SERVICES_COORDINATOR_STATUS_PAGE_H_
#define SERVICES_COORDINATOR_STATUS_PAGE_H_

#include <string>

#include "common/metrics/http_server.h"
#include "services/coordinator/coordinator_core.h"
#include "services/coordinator/history/newest_sample.h"

namespace dd::coordinator {

// The pages /, /api/state, /api/chunks and /sample.png, drawn from `core`
// and `newest_sample` (may be null: no grid), which must outlive the HTTP
// server that serves them.
metrics::HttpPages StatusPages(CoordinatorCore* core, const NewestSample* newest_sample);

// The JSON /api/state answers: {"run", "peers", "rounds", "history"}, each
// the protobuf JSON of the matching coordinator response, and "sample"
// ({step, peerId, unixMs, width, height} of the newest grid, or null).
std::string StatusJson(CoordinatorCore* core, const NewestSample* newest_sample);

// The JSON /api/chunks answers: ListChunksResponse's, at most 20000 chunks
// in id order, without lease ids.
std::string ChunksJson(CoordinatorCore* core);

}  // namespace dd::coordinator

#endif  // SERVICES_COORDINATOR_STATUS_PAGE_H_
