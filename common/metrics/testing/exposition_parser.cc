#include "common/metrics/testing/exposition_parser.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <regex>
#include <set>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace dd::metrics::testing {
namespace {

const std::regex kMetricName("[a-zA-Z_:][a-zA-Z0-9_:]*");
const std::regex kLabelName("[a-zA-Z_][a-zA-Z0-9_]*");

absl::Status LineError(int line, const std::string& text, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("line ", line, " (", text, "): ", what));
}

bool ParseValue(const std::string& s, double* value) {
  if (s == "+Inf" || s == "Inf") {
    *value = HUGE_VAL;
    return true;
  }
  if (s == "-Inf") {
    *value = -HUGE_VAL;
    return true;
  }
  if (s == "NaN") {
    *value = std::nan("");
    return true;
  }
  return absl::SimpleAtod(s, value) && s.find_first_of("iInN") == std::string::npos;
}

// Parses `{a="x",b="y"}` starting at text[*pos] == '{'.
absl::Status ParseLabels(const std::string& text, size_t* pos,
                         std::vector<std::pair<std::string, std::string>>* labels) {
  ++*pos;  // '{'
  while (*pos < text.size() && text[*pos] != '}') {
    size_t eq = text.find('=', *pos);
    if (eq == std::string::npos) return absl::InvalidArgumentError("label without '='");
    std::string name = text.substr(*pos, eq - *pos);
    if (!std::regex_match(name, kLabelName)) {
      return absl::InvalidArgumentError(absl::StrCat("bad label name '", name, "'"));
    }
    *pos = eq + 1;
    if (*pos >= text.size() || text[*pos] != '"') {
      return absl::InvalidArgumentError("label value not quoted");
    }
    ++*pos;
    std::string value;
    bool closed = false;
    while (*pos < text.size()) {
      char c = text[(*pos)++];
      if (c == '"') {
        closed = true;
        break;
      }
      if (c == '\\') {
        if (*pos >= text.size()) break;
        char e = text[(*pos)++];
        if (e == 'n') {
          value += '\n';
        } else if (e == '\\' || e == '"') {
          value += e;
        } else {
          return absl::InvalidArgumentError(absl::StrCat("bad escape \\", std::string(1, e)));
        }
      } else if (c == '\n') {
        return absl::InvalidArgumentError("newline in a label value");
      } else {
        value += c;
      }
    }
    if (!closed) return absl::InvalidArgumentError("unterminated label value");
    for (const auto& [n, v] : *labels) {
      if (n == name) return absl::InvalidArgumentError(absl::StrCat("label ", name, " twice"));
    }
    labels->emplace_back(name, value);
    if (*pos < text.size() && text[*pos] == ',') ++*pos;
  }
  if (*pos >= text.size()) return absl::InvalidArgumentError("unterminated label set");
  ++*pos;  // '}'
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::map<std::string, ParsedFamily>> ParseExposition(const std::string& text) {
  if (!text.empty() && text.back() != '\n') {
    return absl::InvalidArgumentError("the text does not end in a newline");
  }
  std::map<std::string, ParsedFamily> families;
  std::set<std::string> closed;  // families whose samples have ended
  std::string current;
  std::set<std::string> seen_help, seen_type;
  int n = 0;
  for (const auto& raw : absl::StrSplit(text, '\n')) {
    std::string line(raw);
    ++n;
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits(' ', 3));
      if (parts.size() < 3 || (parts[1] != "HELP" && parts[1] != "TYPE")) continue;  // comment
      const std::string& name = parts[2];
      if (!std::regex_match(name, kMetricName)) return LineError(n, line, "bad metric name");
      if (closed.count(name)) return LineError(n, line, "family declared after its samples");
      if (name != current && !current.empty()) closed.insert(current);
      current = name;
      std::string rest = parts.size() > 3 ? parts[3] : "";
      if (parts[1] == "HELP") {
        if (!seen_help.insert(name).second) return LineError(n, line, "HELP twice");
        families[name].help = rest;
      } else {
        if (!seen_type.insert(name).second) return LineError(n, line, "TYPE twice");
        if (families[name].samples.size()) return LineError(n, line, "TYPE after samples");
        static const std::set<std::string> kTypes = {"counter", "gauge", "histogram", "summary",
                                                      "untyped"};
        if (!kTypes.count(rest)) return LineError(n, line, "unknown type");
        if (rest == "counter" && !absl::EndsWith(name, "_total")) {
          return LineError(n, line, "a counter's name must end in _total");
        }
        families[name].type = rest;
      }
      continue;
    }
    // A sample: name[{labels}] value [timestamp]
    size_t pos = 0;
    while (pos < line.size() && line[pos] != '{' && line[pos] != ' ') ++pos;
    std::string name = line.substr(0, pos);
    if (!std::regex_match(name, kMetricName)) return LineError(n, line, "bad sample name");
    std::vector<std::pair<std::string, std::string>> labels;
    if (pos < line.size() && line[pos] == '{') {
      absl::Status s = ParseLabels(line, &pos, &labels);
      if (!s.ok()) return LineError(n, line, std::string(s.message()));
    }
    if (pos >= line.size() || line[pos] != ' ') return LineError(n, line, "no value");
    std::vector<std::string> fields = absl::StrSplit(line.substr(pos + 1), ' ');
    if (fields.empty() || fields.size() > 2) return LineError(n, line, "bad value field");
    double value;
    if (!ParseValue(fields[0], &value)) return LineError(n, line, "value does not parse");
    // Which family: the one declared last, by its name or a histogram suffix.
    std::string family = name;
    const ParsedFamily* declared = families.count(current) ? &families[current] : nullptr;
    if (declared != nullptr && declared->type == "histogram") {
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        if (name == current + suffix) family = current;
      }
      if (name == current + "_bucket") {
        bool has_le = false;
        for (const auto& [l, v] : labels) has_le |= l == "le";
        if (!has_le) return LineError(n, line, "a bucket without le");
      }
    }
    if (family != current) return LineError(n, line, "sample outside its family's block");
    std::sort(labels.begin(), labels.end());
    std::vector<std::string> rendered;
    for (const auto& [l, v] : labels) rendered.push_back(absl::StrCat(l, "=\"", v, "\""));
    std::string key = absl::StrCat(name, "{", absl::StrJoin(rendered, ","), "}");
    if (!families[family].samples.emplace(key, value).second) {
      return LineError(n, line, "series twice");
    }
  }
  // Histograms: cumulative buckets, +Inf equal to _count.
  for (const auto& [name, f] : families) {
    if (f.type != "histogram") continue;
    std::map<std::string, std::vector<std::pair<double, double>>> buckets;  // by other labels
    std::map<std::string, double> counts;
    for (const auto& [key, value] : f.samples) {
      std::string labels = key.substr(key.find('{'));
      if (absl::StartsWith(key, name + "_bucket{")) {
        std::smatch m;
        static const std::regex kLe("le=\"([^\"]*)\",?");
        if (!std::regex_search(labels, m, kLe)) continue;
        double le;
        if (!ParseValue(m[1].str(), &le)) {
          return absl::InvalidArgumentError(absl::StrCat(key, ": le does not parse"));
        }
        std::string rest = std::regex_replace(labels, kLe, "");
        if (absl::EndsWith(rest, ",}")) rest = rest.substr(0, rest.size() - 2) + "}";
        buckets[rest].emplace_back(le, value);
      } else if (absl::StartsWith(key, name + "_count{")) {
        counts[labels] = value;
      }
    }
    for (auto& [labels, list] : buckets) {
      std::sort(list.begin(), list.end());
      for (size_t i = 1; i < list.size(); ++i) {
        if (list[i].second < list[i - 1].second) {
          return absl::InvalidArgumentError(absl::StrCat(name, labels, ": buckets decrease"));
        }
      }
      if (list.empty() || !std::isinf(list.back().first)) {
        return absl::InvalidArgumentError(absl::StrCat(name, labels, ": no +Inf bucket"));
      }
      if (!counts.count(labels) || counts[labels] != list.back().second) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, labels, ": +Inf bucket differs from _count"));
      }
    }
  }
  return families;
}

}  // namespace dd::metrics::testing
