// Metrics in Prometheus' text exposition format (version 0.0.4), for the
// /metrics endpoint every server and trainer serves on its --http_port
// (common/metrics/metrics_http_server.h). Debian 12 packages no Prometheus
// client library for C++, so this is a small one: counters, gauges and
// histograms in label families, plus gauges read at scrape time.
//
// Conventions (https://prometheus.io/docs/practices/naming/): base units in
// names (_seconds, _bytes), counters end in _total, label sets are bounded
// (a family keeps at most kMaxSeriesPerFamily series; further label values
// land in one series whose values are all "other").
#ifndef COMMON_METRICS_PROMETHEUS_H_
#define COMMON_METRICS_PROMETHEUS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace dd::metrics {

// Label values of one series, in the order of its family's label names.
using LabelValues = std::vector<std::string>;

constexpr size_t kMaxSeriesPerFamily = 2000;

// A value that only goes up (restarts reset it; Prometheus' rate() copes).
class Counter {
 public:
  // `by` must be >= 0; negative increments are ignored.
  void Increment(double by = 1);
  double Value() const;

 private:
  std::atomic<double> value_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(double value);
  void Add(double delta);
  double Value() const;

 private:
  std::atomic<double> value_{0};
};

// Observations counted into cumulative buckets (upper bounds, ascending),
// with their sum and count.
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double value);

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Read() const;
  const std::vector<double>& upper_bounds() const { return bounds_; }

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1
  std::atomic<double> sum_{0};
};

// Bucket bounds: `count` values from `start`, each `factor` times the last.
std::vector<double> ExponentialBuckets(double start, double factor, int count);

// One metric name with its help text, label names and series.
template <typename T>
class Family {
 public:
  // The series with these label values (created on first use). The number of
  // values must equal the number of label names, and a family holds at most
  // kMaxSeriesPerFamily series; otherwise the "other" series.
  T* WithLabels(const LabelValues& values) {
    absl::MutexLock lock(&mu_);
    const LabelValues* key = &values;
    LabelValues other;
    if (values.size() != label_names_.size() ||
        (series_.size() >= kMaxSeriesPerFamily && series_.count(values) == 0)) {
      other.assign(label_names_.size(), "other");
      key = &other;
    }
    auto& slot = series_[*key];
    if (slot == nullptr) slot = make_();
    return slot.get();
  }
  // The series of a family without labels.
  T* Get() { return WithLabels({}); }

  // Calls `f(label values, series)` for every series, in label order.
  template <typename F>
  void ForEach(F f) const {
    absl::MutexLock lock(&mu_);
    for (const auto& [labels, series] : series_) f(labels, *series);
  }
  const std::string& name() const { return name_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

 private:
  friend class MetricsRegistry;
  Family(std::string name, std::string help, std::vector<std::string> label_names,
         std::function<std::unique_ptr<T>()> make)
      : name_(std::move(name)),
        help_(std::move(help)),
        label_names_(std::move(label_names)),
        make_(std::move(make)) {}

  // Fixed after construction.
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  const std::function<std::unique_ptr<T>()> make_;

  mutable absl::Mutex mu_;
  std::map<LabelValues, std::unique_ptr<T>> series_ ABSL_GUARDED_BY(mu_);
};

// Samples of a gauge computed at scrape time (label values, value).
using GaugeSamples = std::vector<std::pair<LabelValues, double>>;

// Every metric of a process. Thread-safe; families live as long as the
// registry. Registering a name twice or an invalid name is a programming
// error (CHECK).
class MetricsRegistry {
 public:
  Family<Counter>* AddCounter(const std::string& name, const std::string& help,
                              std::vector<std::string> label_names = {});
  Family<Gauge>* AddGauge(const std::string& name, const std::string& help,
                          std::vector<std::string> label_names = {});
  Family<Histogram>* AddHistogram(const std::string& name, const std::string& help,
                                  std::vector<double> upper_bounds,
                                  std::vector<std::string> label_names = {});
  // A gauge whose samples `read` returns at each scrape (state another
  // component owns, e.g. the ledger's chunk counts). `read` runs on the
  // scraping thread and must not call back into the registry.
  void AddGaugeFunction(const std::string& name, const std::string& help,
                        std::vector<std::string> label_names,
                        std::function<GaugeSamples()> read);

  // A counter whose samples `read` returns at each scrape (a total another
  // component keeps, e.g. the ledger's chunk completions). Same rules as
  // AddGaugeFunction; the name must end in _total.
  void AddCounterFunction(const std::string& name, const std::string& help,
                          std::vector<std::string> label_names,
                          std::function<GaugeSamples()> read);

  // The text exposition of every family, sorted by name.
  std::string Render() const;

 private:
  struct Entry {
    std::string type;  // counter, gauge, histogram
    std::function<void(std::string*)> render;
  };
  void Register(const std::string& name, Entry entry);
  void AddFunction(const std::string& type, const std::string& name, const std::string& help,
                   std::vector<std::string> label_names, std::function<GaugeSamples()> read);
  template <typename T>
  Family<T>* AddSimple(const std::string& type, const std::string& name, const std::string& help,
                       std::vector<std::string> label_names,
                       std::vector<std::unique_ptr<Family<T>>>* owner);

  mutable absl::Mutex mu_;
  std::map<std::string, Entry> families_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Family<Counter>>> counters_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Family<Gauge>>> gauges_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Family<Histogram>>> histograms_ ABSL_GUARDED_BY(mu_);
};

// Escapes a label value for the text format (backslash, quote, newline).
std::string EscapeLabelValue(const std::string& value);
// Formats a sample value as the text format spells it (+Inf, -Inf, NaN).
std::string FormatValue(double value);

}  // namespace dd::metrics

#endif  // COMMON_METRICS_PROMETHEUS_H_
