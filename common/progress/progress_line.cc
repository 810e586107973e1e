#include "common/progress/progress_line.h"

#include <glog/logging.h>

#include "absl/strings/str_format.h"

namespace dd {

std::string FormatEta(absl::Duration d) {
  int64_t s = absl::ToInt64Seconds(d);
  if (s < 0) s = 0;
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

ProgressLine::ProgressLine(std::string what, uint64_t total, std::string unit,
                           absl::Duration interval)
    : what_(std::move(what)),
      total_(total),
      unit_(std::move(unit)),
      interval_(interval),
      start_(absl::Now()),
      last_print_(start_) {}

std::string ProgressLine::Format(uint64_t done, uint64_t bytes,
                                 const std::string& extra) const {
  double secs = absl::ToDoubleSeconds(absl::Now() - start_);
  double rate = secs > 0 ? done / secs : 0;
  std::string line = absl::StrFormat("%s: %d", what_, done);
  if (total_ > 0) {
    line += absl::StrFormat("/%d %s (%.1f%%)", total_, unit_, 100.0 * done / total_);
  } else {
    line += " " + unit_;
  }
  line += absl::StrFormat(" %.1f %s/s", rate, unit_);
  if (bytes > 0 && secs > 0) line += absl::StrFormat(" %.1f MB/s", bytes / secs / 1e6);
  if (total_ > 0 && done < total_ && rate > 0) {
    line += " ETA " + FormatEta(absl::Seconds((total_ - done) / rate));
  }
  if (!extra.empty()) line += " " + extra;
  return line;
}

void ProgressLine::Update(uint64_t done, uint64_t bytes, const std::string& extra) {
  done_ = done;
  bytes_ = bytes;
  absl::Time now = absl::Now();
  if (now - last_print_ < interval_) return;
  last_print_ = now;
  LOG(INFO) << Format(done, bytes, extra);
}

void ProgressLine::Finish(const std::string& extra) {
  LOG(INFO) << Format(done_, bytes_, extra) << " (done in "
            << FormatEta(absl::Now() - start_) << ")";
}

}  // namespace dd
