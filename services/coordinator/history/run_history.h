// The run's history for people watching it (ddctl history, grpcurl, the
// status page): one point per global step, built from the telemetry peers
// send with ReportProgress. Pure logic and a file; no gRPC.
//
// Bounded: the newest `max_points` points in memory, the same in the log
// file (compacted when it holds twice as many). Durable enough to survive a
// restart: a step's point is appended to the log once a report for a later
// step arrives (or at Flush), so a crash loses at most the open steps. The
// log is JSON lines; a torn last line (a crash mid-write) is skipped.
#ifndef SERVICES_COORDINATOR_HISTORY_RUN_HISTORY_H_
#define SERVICES_COORDINATOR_HISTORY_RUN_HISTORY_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "protos/coordinator.pb.h"

namespace dd::coordinator {

namespace v1 = ::distdiff::coordinator::v1;

class RunHistory {
 public:
  // Reads the log at `path` (created when missing; empty path: memory only).
  // DataLoss naming the line for a log whose lines (other than a torn last
  // one) do not parse; the I/O error otherwise.
  static absl::StatusOr<std::unique_ptr<RunHistory>> Open(const std::string& path,
                                                          size_t max_points = 100000);

  // Records `peer_id`'s numbers for step `t.step()` (a later report of the
  // same peer for the same step replaces its earlier one). INVALID_ARGUMENT
  // for non-finite or absurd values (loss beyond 1e6 in magnitude, negative
  // or over a day of seconds, a learning rate outside [0, 10]); a report for
  // a step already written out, or more than 2 steps behind the newest, is
  // ignored.
  absl::Status Report(const std::string& peer_id, const v1::StepTelemetry& t, absl::Time now)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Points with step > since_step, the newest `max_points` of them, in
  // ascending order of step (the open steps included).
  std::vector<v1::HistoryPoint> Points(uint64_t since_step, size_t max_points) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // Writes the open steps' points to the log (at shutdown).
  absl::Status Flush() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  RunHistory(std::string path, size_t max_points) : path_(std::move(path)), max_points_(max_points) {}

  struct OpenStep {
    int64_t first_unix_ms = 0;
    std::map<std::string, v1::StepTelemetry> by_peer;
  };
  static v1::HistoryPoint Summarize(uint64_t step, const OpenStep& open);
  absl::Status WriteOut(const v1::HistoryPoint& point) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Compact() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Fixed after construction.
  const std::string path_;
  const size_t max_points_;

  mutable absl::Mutex mu_;
  std::deque<v1::HistoryPoint> points_ ABSL_GUARDED_BY(mu_);  // written out, ascending
  std::map<uint64_t, OpenStep> open_ ABSL_GUARDED_BY(mu_);    // not yet written out
  size_t lines_in_log_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace dd::coordinator

#endif  // SERVICES_COORDINATOR_HISTORY_RUN_HISTORY_H_
