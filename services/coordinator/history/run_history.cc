#include "services/coordinator/history/run_history.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/io/file_util.h"
#include "common/status/status_macros.h"

namespace dd::coordinator {
namespace {

using nlohmann::json;

json ToJson(const v1::HistoryPoint& p) {
  return json{{"step", p.step()},
              {"unix_ms", p.unix_ms()},
              {"reporters", p.reporters()},
              {"loss", p.loss()},
              {"lr", p.learning_rate()},
              {"step_s", p.step_seconds()},
              {"avg_s", p.averaging_seconds()},
              {"samples_per_s", p.samples_per_second()}};
}

bool FromJson(const std::string& line, v1::HistoryPoint* p) {
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return false;
  for (const char* key : {"step", "unix_ms", "reporters", "loss", "lr", "step_s", "avg_s",
                          "samples_per_s"}) {
    if (!j.contains(key) || !j[key].is_number()) return false;
  }
  p->set_step(j["step"].get<uint64_t>());
  p->set_unix_ms(j["unix_ms"].get<int64_t>());
  p->set_reporters(j["reporters"].get<uint32_t>());
  p->set_loss(j["loss"].get<double>());
  p->set_learning_rate(j["lr"].get<double>());
  p->set_step_seconds(j["step_s"].get<double>());
  p->set_averaging_seconds(j["avg_s"].get<double>());
  p->set_samples_per_second(j["samples_per_s"].get<double>());
  return true;
}

bool Within(double v, double lo, double hi) { return std::isfinite(v) && v >= lo && v <= hi; }

}  // namespace

absl::StatusOr<std::unique_ptr<RunHistory>> RunHistory::Open(const std::string& path,
                                                             size_t max_points) {
  std::unique_ptr<RunHistory> h(new RunHistory(path, std::max<size_t>(max_points, 1)));
  if (path.empty()) return h;
  if (std::filesystem::exists(path)) {
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, size_t{1} << 30));
    std::vector<std::string> lines = absl::StrSplit(text, '\n');
    // Text ending in '\n' leaves an empty last piece; any other last piece
    // is a line a crash cut short.
    const bool torn_tail = !text.empty() && text.back() != '\n';
    if (!lines.empty() && lines.back().empty()) lines.pop_back();
    for (size_t i = 0; i < lines.size(); ++i) {
      v1::HistoryPoint p;
      if (!FromJson(lines[i], &p)) {
        if (i + 1 == lines.size() && torn_tail) break;
        return absl::DataLossError(absl::StrCat(path, " line ", i + 1, " does not parse"));
      }
      if (!h->points_.empty() && p.step() <= h->points_.back().step()) continue;
      h->points_.push_back(p);
      if (h->points_.size() > h->max_points_) h->points_.pop_front();
    }
  }
  absl::MutexLock lock(&h->mu_);
  if (absl::Status s = h->Compact(); !s.ok()) return s;
  return h;
}

absl::Status RunHistory::Report(const std::string& peer_id, const v1::StepTelemetry& t,
                                absl::Time now) {
  if (!Within(t.loss(), -1e6, 1e6) || !Within(t.learning_rate(), 0, 10) ||
      !Within(t.step_seconds(), 0, 86400) || !Within(t.averaging_seconds(), 0, 86400) ||
      !Within(t.samples_per_second(), 0, 1e9) || t.step() == 0) {
    return absl::InvalidArgumentError(
        "telemetry: every number must be finite and in range (step >= 1, |loss| <= 1e6, "
        "0 <= lr <= 10, 0 <= seconds <= 86400, 0 <= samples/s <= 1e9)");
  }
  absl::MutexLock lock(&mu_);
  const uint64_t newest_written = points_.empty() ? 0 : points_.back().step();
  const uint64_t newest_open = open_.empty() ? 0 : open_.rbegin()->first;
  if (t.step() <= newest_written || t.step() + 2 < newest_open) return absl::OkStatus();
  OpenStep& open = open_[t.step()];
  if (open.by_peer.empty()) open.first_unix_ms = absl::ToUnixMillis(now);
  open.by_peer[peer_id] = t;
  // Steps two or more behind the newest one are complete: write them out.
  const uint64_t newest = open_.rbegin()->first;
  while (!open_.empty() && open_.begin()->first + 2 <= newest) {
    v1::HistoryPoint point = Summarize(open_.begin()->first, open_.begin()->second);
    open_.erase(open_.begin());
    if (absl::Status s = WriteOut(point); !s.ok()) return s;
  }
  return absl::OkStatus();
}

v1::HistoryPoint RunHistory::Summarize(uint64_t step, const OpenStep& open) {
  v1::HistoryPoint p;
  p.set_step(step);
  p.set_unix_ms(open.first_unix_ms);
  double n = static_cast<double>(open.by_peer.size());
  double loss = 0, lr = 0, step_s = 0, avg_s = 0, rate = 0;
  for (const auto& [peer, t] : open.by_peer) {
    loss += t.loss();
    lr += t.learning_rate();
    step_s += t.step_seconds();
    avg_s += t.averaging_seconds();
    rate += t.samples_per_second();
  }
  p.set_reporters(static_cast<uint32_t>(n));
  if (n > 0) {
    p.set_loss(loss / n);
    p.set_learning_rate(lr / n);
    p.set_step_seconds(step_s / n);
    p.set_averaging_seconds(avg_s / n);
  }
  p.set_samples_per_second(rate);
  return p;
}

absl::Status RunHistory::WriteOut(const v1::HistoryPoint& point) {
  points_.push_back(point);
  if (points_.size() > max_points_) points_.pop_front();
  if (path_.empty()) return absl::OkStatus();
  std::ofstream out(path_, std::ios::app);
  out << ToJson(point).dump() << "\n";
  out.flush();
  if (!out) return absl::InternalError(absl::StrCat("cannot append to ", path_));
  ++lines_in_log_;
  if (lines_in_log_ > 2 * max_points_) return Compact();
  return absl::OkStatus();
}

absl::Status RunHistory::Compact() {
  if (path_.empty()) return absl::OkStatus();
  std::string text;
  for (const auto& p : points_) absl::StrAppend(&text, ToJson(p).dump(), "\n");
  if (absl::Status s = WriteFileAtomically(path_, text); !s.ok()) return s;
  lines_in_log_ = points_.size();
  return absl::OkStatus();
}

std::vector<v1::HistoryPoint> RunHistory::Points(uint64_t since_step, size_t max_points) const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::HistoryPoint> out;
  for (const auto& p : points_) {
    if (p.step() > since_step) out.push_back(p);
  }
  for (const auto& [step, open] : open_) {
    if (step > since_step) out.push_back(Summarize(step, open));
  }
  if (out.size() > max_points) out.erase(out.begin(), out.end() - max_points);
  return out;
}

absl::Status RunHistory::Flush() {
  absl::MutexLock lock(&mu_);
  while (!open_.empty()) {
    v1::HistoryPoint point = Summarize(open_.begin()->first, open_.begin()->second);
    open_.erase(open_.begin());
    if (absl::Status s = WriteOut(point); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace dd::coordinator
