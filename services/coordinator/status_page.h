// The coordinator's live status page, on its --http_port next to /metrics:
// GET / is a self-contained page (HTML, CSS and a little JavaScript in this
// binary; nothing from a CDN, so it works offline) that polls
// GET /api/state every 2 s and draws the run's state and progress with an
// ETA, the global loss curve and samples/s over the global steps (SVG), the
// peers table, the chunks of the epoch as a grid, and the recent rounds.
// Read-only; the HTTP server's viewer token guards both (a browser passes
// it as ?token=).
#ifndef SERVICES_COORDINATOR_STATUS_PAGE_H_
#define SERVICES_COORDINATOR_STATUS_PAGE_H_

#include <string>

#include "common/metrics/http_server.h"
#include "services/coordinator/coordinator_core.h"

namespace dd::coordinator {

// The pages / and /api/state, drawn from `core` (which must outlive the
// HTTP server that serves them).
metrics::HttpPages StatusPages(CoordinatorCore* core);

// The JSON /api/state answers: {"run", "peers", "chunks", "rounds",
// "history"}, each the protobuf JSON of the matching coordinator response
// (chunks: at most 20000, in id order).
std::string StatusJson(CoordinatorCore* core);

}  // namespace dd::coordinator

#endif  // SERVICES_COORDINATOR_STATUS_PAGE_H_
