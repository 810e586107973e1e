// A strict parser of Prometheus' text exposition format 0.0.4, for tests:
// every /metrics page the project serves is parsed back with it.
#ifndef COMMON_METRICS_TESTING_EXPOSITION_PARSER_H_
#define COMMON_METRICS_TESTING_EXPOSITION_PARSER_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace dd::metrics::testing {

struct ParsedFamily {
  std::string type;  // counter, gauge, histogram, summary, untyped
  std::string help;
  // Every sample of the family: its name with its label set as written
  // after sorting the labels (`name{a="x",le="1"}`), and its value.
  std::map<std::string, double> samples;
};

// Parses `text` and checks what the format requires and what Prometheus
// refuses: a valid name for every family and label, HELP and TYPE at most
// once per family and before its samples, samples only of the family last
// declared (histograms: _bucket with an `le` label, _sum, _count),
// well-quoted and escaped label values, no label twice in a set, no series
// twice, values that parse (incl. +Inf, -Inf, NaN), the text ending in a
// newline; for histograms, buckets that never decrease and a +Inf bucket
// equal to _count; and our convention that counters end in _total.
// INVALID_ARGUMENT names the line and what is wrong with it.
absl::StatusOr<std::map<std::string, ParsedFamily>> ParseExposition(const std::string& text);

}  // namespace dd::metrics::testing

#endif  // COMMON_METRICS_TESTING_EXPOSITION_PARSER_H_
