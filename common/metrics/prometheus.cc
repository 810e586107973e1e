#include "common/metrics/prometheus.h"

#include <algorithm>
#include <cmath>
#include <regex>

#include <glog/logging.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dd::metrics {
namespace {

// C++17 has no atomic<double>::fetch_add.
void AtomicAdd(std::atomic<double>* target, double delta) {
  double current = target->load(std::memory_order_relaxed);
  while (!target->compare_exchange_weak(current, current + delta, std::memory_order_relaxed)) {
  }
}

bool ValidMetricName(const std::string& name) {
  static const std::regex kName("[a-zA-Z_:][a-zA-Z0-9_:]*");
  return std::regex_match(name, kName);
}

bool ValidLabelName(const std::string& name) {
  static const std::regex kLabel("[a-zA-Z_][a-zA-Z0-9_]*");
  return std::regex_match(name, kLabel) && name.rfind("__", 0) != 0;
}

// `{a="x",b="y"}` with an extra label (le) when given; "" without labels.
std::string LabelSet(const std::vector<std::string>& names, const LabelValues& values,
                     const std::string& extra_name = "", const std::string& extra_value = "") {
  std::string out;
  for (size_t i = 0; i < names.size() && i < values.size(); ++i) {
    absl::StrAppend(&out, out.empty() ? "{" : ",", names[i], "=\"", EscapeLabelValue(values[i]),
                    "\"");
  }
  if (!extra_name.empty()) {
    absl::StrAppend(&out, out.empty() ? "{" : ",", extra_name, "=\"", extra_value, "\"");
  }
  if (!out.empty()) out += "}";
  return out;
}

// The text format's escapes: backslash and newline, and in label values
// the double quote as well.
std::string Escape(const std::string& text, bool quote) {
  std::string out;
  for (char c : text) {
    if (c == '\\' || (quote && c == '"')) {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void Header(const std::string& name, const std::string& help, const std::string& type,
            std::string* out) {
  absl::StrAppend(out, "# HELP ", name, " ", Escape(help, /*quote=*/false), "\n# TYPE ", name,
                  " ", type, "\n");
}

}  // namespace

std::string EscapeLabelValue(const std::string& value) { return Escape(value, /*quote=*/true); }

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  // Integers as integers (counts), others with round-trip precision.
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    return absl::StrFormat("%.0f", value);
  }
  return absl::StrFormat("%.17g", value);
}

void Counter::Increment(double by) {
  if (!(by >= 0)) return;
  AtomicAdd(&value_, by);
}
double Counter::Value() const { return value_.load(std::memory_order_relaxed); }

void Gauge::Set(double value) { value_.store(value, std::memory_order_relaxed); }
void Gauge::Add(double delta) { AtomicAdd(&value_, delta); }
double Gauge::Value() const { return value_.load(std::memory_order_relaxed); }

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)),
      buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  CHECK(std::is_sorted(bounds_.begin(), bounds_.end())) << "histogram bounds must ascend";
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::Observe(double value) {
  if (std::isnan(value)) return;
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(&sum_, value);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(running);
  }
  s.count = running;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> bounds;
  for (int i = 0; i < count; ++i, start *= factor) bounds.push_back(start);
  return bounds;
}

void MetricsRegistry::Register(const std::string& name, Entry entry) {
  CHECK(ValidMetricName(name)) << "bad metric name " << name;
  absl::MutexLock lock(&mu_);
  CHECK(families_.count(name) == 0) << "metric " << name << " registered twice";
  families_.emplace(name, std::move(entry));
}

// Counters and gauges: one sample per series, the series' Value().
template <typename T>
Family<T>* MetricsRegistry::AddSimple(const std::string& type, const std::string& name,
                                      const std::string& help,
                                      std::vector<std::string> label_names,
                                      std::vector<std::unique_ptr<Family<T>>>* owner) {
  for (const auto& l : label_names) CHECK(ValidLabelName(l)) << "bad label name " << l;
  auto family = std::unique_ptr<Family<T>>(
      new Family<T>(name, help, std::move(label_names), [] { return std::make_unique<T>(); }));
  Family<T>* f = family.get();
  Register(name, {type, [f, help, type](std::string* out) {
                    Header(f->name(), help, type, out);
                    f->ForEach([&](const LabelValues& labels, const T& series) {
                      absl::StrAppend(out, f->name(), LabelSet(f->label_names(), labels), " ",
                                      FormatValue(series.Value()), "\n");
                    });
                  }});
  absl::MutexLock lock(&mu_);
  owner->push_back(std::move(family));
  return f;
}

Family<Counter>* MetricsRegistry::AddCounter(const std::string& name, const std::string& help,
                                             std::vector<std::string> label_names) {
  CHECK(absl::EndsWith(name, "_total")) << "a counter's name ends in _total: " << name;
  return AddSimple<Counter>("counter", name, help, std::move(label_names), &counters_);
}

Family<Gauge>* MetricsRegistry::AddGauge(const std::string& name, const std::string& help,
                                         std::vector<std::string> label_names) {
  return AddSimple<Gauge>("gauge", name, help, std::move(label_names), &gauges_);
}

Family<Histogram>* MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                                 std::vector<double> upper_bounds,
                                                 std::vector<std::string> label_names) {
  for (const auto& l : label_names) {
    CHECK(ValidLabelName(l) && l != "le") << "bad label name " << l;
  }
  auto family = std::unique_ptr<Family<Histogram>>(
      new Family<Histogram>(name, help, std::move(label_names), [upper_bounds] {
        return std::make_unique<Histogram>(upper_bounds);
      }));
  Family<Histogram>* f = family.get();
  Register(name, {"histogram", [f, help](std::string* out) {
                    Header(f->name(), help, "histogram", out);
                    f->ForEach([&](const LabelValues& labels, const Histogram& h) {
                      Histogram::Snapshot s = h.Read();
                      const auto& bounds = h.upper_bounds();
                      for (size_t i = 0; i <= bounds.size(); ++i) {
                        std::string le = i < bounds.size() ? FormatValue(bounds[i]) : "+Inf";
                        absl::StrAppend(out, f->name(), "_bucket",
                                        LabelSet(f->label_names(), labels, "le", le), " ",
                                        s.cumulative[i], "\n");
                      }
                      absl::StrAppend(out, f->name(), "_sum", LabelSet(f->label_names(), labels),
                                      " ", FormatValue(s.sum), "\n");
                      absl::StrAppend(out, f->name(), "_count",
                                      LabelSet(f->label_names(), labels), " ", s.count, "\n");
                    });
                  }});
  absl::MutexLock lock(&mu_);
  histograms_.push_back(std::move(family));
  return f;
}

void MetricsRegistry::AddGaugeFunction(const std::string& name, const std::string& help,
                                       std::vector<std::string> label_names,
                                       std::function<GaugeSamples()> read) {
  AddFunction("gauge", name, help, std::move(label_names), std::move(read));
}

void MetricsRegistry::AddCounterFunction(const std::string& name, const std::string& help,
                                         std::vector<std::string> label_names,
                                         std::function<GaugeSamples()> read) {
  CHECK(absl::EndsWith(name, "_total")) << "a counter's name ends in _total: " << name;
  AddFunction("counter", name, help, std::move(label_names), std::move(read));
}

void MetricsRegistry::AddFunction(const std::string& type, const std::string& name,
                                  const std::string& help, std::vector<std::string> label_names,
                                  std::function<GaugeSamples()> read) {
  for (const auto& l : label_names) CHECK(ValidLabelName(l)) << "bad label name " << l;
  Register(name, {type, [type, name, help, label_names, read](std::string* out) {
                    Header(name, help, type, out);
                    GaugeSamples samples = read();
                    std::sort(samples.begin(), samples.end());
                    for (const auto& [labels, value] : samples) {
                      if (labels.size() != label_names.size()) continue;
                      absl::StrAppend(out, name, LabelSet(label_names, labels), " ",
                                      FormatValue(value), "\n");
                    }
                  }});
}

std::string MetricsRegistry::Render() const {
  // Copies the renderers so that a gauge function never runs under mu_.
  std::vector<std::function<void(std::string*)>> renderers;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, entry] : families_) renderers.push_back(entry.render);
  }
  std::string out;
  for (const auto& render : renderers) render(&out);
  return out;
}

}  // namespace dd::metrics
