// ProgressLine: the "what, how far, how fast, how long still" line that every
// long job prints (indexing, downloads, training).
//
//   indexing: 1200/5000 files (24.0%) 48.2 files/s 95.1 MB/s ETA 1m18s
//
// Lines go to glog (stderr), at most one per `interval`, plus a final one.
#ifndef COMMON_PROGRESS_PROGRESS_LINE_H_
#define COMMON_PROGRESS_PROGRESS_LINE_H_

#include <cstdint>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace dd {

class ProgressLine {
 public:
  // `what` names the job, `unit` its items ("files", "steps"); `total` may be 0
  // when unknown (no percentage or ETA then).
  ProgressLine(std::string what, uint64_t total, std::string unit,
               absl::Duration interval = absl::Seconds(2));

  // Records that `done` items and `bytes` bytes are finished so far; prints a
  // line when `interval` has passed since the last one. `extra` is appended.
  void Update(uint64_t done, uint64_t bytes = 0, const std::string& extra = "");

  // Prints the closing line (with the average rate).
  void Finish(const std::string& extra = "");

  // The line Update would print now (for tests).
  std::string Format(uint64_t done, uint64_t bytes, const std::string& extra) const;

 private:
  const std::string what_;
  const uint64_t total_;
  const std::string unit_;
  const absl::Duration interval_;
  const absl::Time start_;
  absl::Time last_print_;
  uint64_t done_ = 0;
  uint64_t bytes_ = 0;
};

// "1h02m", "3m05s", "12s".
std::string FormatEta(absl::Duration d);

}  // namespace dd

#endif  // COMMON_PROGRESS_PROGRESS_LINE_H_
