#include "trainer/averaging/span_reducer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace dd::averaging {

double ClipToL2Norm(float* values, size_t n, double max_norm) {
  double norm2 = 0;
  for (size_t i = 0; i < n; ++i) norm2 += static_cast<double>(values[i]) * values[i];
  const double norm = std::sqrt(norm2);
  if (max_norm > 0 && norm > max_norm) {
    const float scale = static_cast<float>(max_norm / norm);
    for (size_t i = 0; i < n; ++i) values[i] *= scale;
  }
  return norm;
}

std::vector<float> CenteredClip(const std::vector<const std::vector<float>*>& inputs,
                                const std::vector<double>& weights, double tau, int iterations) {
  size_t n = inputs.empty() ? 0 : inputs[0]->size();
  size_t k = inputs.size();
  double wsum = 0;
  for (double w : weights) wsum += w;
  std::vector<double> v(n);
  std::vector<float> column(k);
  for (size_t j = 0; j < n; ++j) {  // coordinate-wise median
    for (size_t i = 0; i < k; ++i) column[i] = (*inputs[i])[j];
    std::nth_element(column.begin(), column.begin() + k / 2, column.end());
    v[j] = column[k / 2];
  }
  for (int it = 0; it < iterations; ++it) {
    std::vector<double> step(n, 0.0);
    for (size_t i = 0; i < k; ++i) {
      double norm2 = 0;
      for (size_t j = 0; j < n; ++j) {
        double d = (*inputs[i])[j] - v[j];
        norm2 += d * d;
      }
      double norm = std::sqrt(norm2);
      double scale = (weights[i] / wsum) * (norm > tau ? tau / norm : 1.0);
      for (size_t j = 0; j < n; ++j) step[j] += scale * ((*inputs[i])[j] - v[j]);
    }
    for (size_t j = 0; j < n; ++j) v[j] += step[j];
  }
  return std::vector<float>(v.begin(), v.end());
}

std::vector<float> AggregateRows(const std::vector<const std::vector<float>*>& rows,
                                 const std::vector<double>& weights, Aggregation aggregation,
                                 double clip_tau, int clip_iterations) {
  if (rows.empty()) return {};
  if (aggregation == Aggregation::kCenteredClip) {
    return CenteredClip(rows, weights, clip_tau, clip_iterations);
  }
  const size_t n = rows[0]->size();
  std::vector<double> acc(n, 0.0);
  double weight_sum = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const double w = weights[i];
    const float* x = rows[i]->data();
    for (size_t j = 0; j < n; ++j) acc[j] += w * x[j];
    weight_sum += w;
  }
  std::vector<float> mean(n);
  for (size_t j = 0; j < n; ++j) mean[j] = static_cast<float>(acc[j] / weight_sum);
  return mean;
}

SpanReducer::SpanReducer(ReducerOptions options, absl::Time start)
    : options_(options),
      num_parts_(static_cast<uint32_t>((options.span_length + options.part_elements - 1) /
                                       options.part_elements)) {
  parts_.resize(num_parts_);
  for (Part& p : parts_) {
    p.weights.assign(options_.num_members, 0);
    p.given.assign(options_.num_members, false);
    p.inputs.resize(options_.num_members);
  }
  excluded_.assign(options_.num_members, false);
  last_seen_.assign(options_.num_members, start);
  given_count_.assign(options_.num_members, 0);
  pending_.assign(options_.num_members, 0);
}

uint32_t SpanReducer::PartLength(uint32_t part) const {
  uint64_t start = uint64_t{part} * options_.part_elements;
  return static_cast<uint32_t>(std::min<uint64_t>(options_.part_elements,
                                                  options_.span_length - start));
}

std::shared_ptr<const PartOutcome> SpanReducer::Reduce(const Part& part, uint32_t index) const {
  const uint32_t length = PartLength(index);
  auto out = std::make_shared<PartOutcome>();
  out->contributors = part.contributors;
  out->total_weight = part.weight_sum;
  std::vector<const std::vector<float>*> rows;
  std::vector<double> weights;
  for (uint32_t s = 0; s < options_.num_members; ++s) {
    if (!part.given[s]) continue;
    out->contributor_indexes.push_back(s);
    if (part.weights[s] > 0) {
      rows.push_back(&part.inputs[s]);
      weights.push_back(part.weights[s]);
    }
  }
  if (!(part.weight_sum > 0)) return out;  // nothing to average
  std::vector<float> mean = AggregateRows(rows, weights, options_.aggregation, options_.clip_tau,
                                          options_.clip_iterations);
  const Codec& codec = CodecFor(options_.codec);
  if (options_.delta_results) {
    out->deltas.resize(options_.num_members);
    std::vector<float> delta(length);
    for (uint32_t s = 0; s < options_.num_members; ++s) {
      if (!part.given[s]) continue;
      for (uint32_t j = 0; j < length; ++j) delta[j] = mean[j] - part.inputs[s][j];
      codec.Encode(delta.data(), length, &out->deltas[s]);
    }
    out->values = std::move(mean);
    out->averaged = true;
    return out;
  }
  // Parts are reduced on different threads but own disjoint residual ranges.
  float* const error = options_.mean_error == nullptr
                           ? nullptr
                           : options_.mean_error + uint64_t{index} * options_.part_elements;
  if (error != nullptr) {
    for (uint32_t j = 0; j < length; ++j) mean[j] += error[j];
  }
  codec.Encode(mean.data(), length, &out->encoded);
  if (options_.codec == CodecId::kNone) {
    out->values = std::move(mean);  // decoding the copy would give it back
    if (error != nullptr) std::fill(error, error + length, 0.0f);
  } else {
    out->values.resize(length);
    if (!codec.Decode(out->encoded, length, out->values.data()).ok()) {
      return std::make_shared<PartOutcome>();  // cannot happen for finite input
    }
    if (error != nullptr) {
      for (uint32_t j = 0; j < length; ++j) error[j] = mean[j] - out->values[j];
    }
  }
  out->averaged = true;
  return out;
}

std::vector<SpanReducer::Done> SpanReducer::MaybeReduceLocked(uint32_t index, bool force,
                                                              absl::Time now) {
  Part& p = parts_[index];
  if (p.outcome != nullptr) return {};
  if (!force) {
    for (uint32_t s = 0; s < options_.num_members; ++s) {
      if (!excluded_[s] && !p.given[s]) return {};
    }
  }
  p.outcome = Reduce(p, index);
  ++reduced_;
  for (uint32_t s = 0; s < options_.num_members; ++s) {
    // A sender's silence counts from when its last waiting part was done.
    if (p.given[s] && --pending_[s] == 0) last_seen_[s] = now;
  }
  if (options_.keep_local_inputs && options_.local_sender.has_value() &&
      p.given[*options_.local_sender]) {
    p.kept_local = std::move(p.inputs[*options_.local_sender]);
  }
  p.inputs.clear();
  std::vector<Done> waiting;
  waiting.swap(p.waiting);
  return waiting;
}

void SpanReducer::Contribute(uint32_t sender, uint64_t offset, const float* values, size_t count,
                             double weight, absl::Time now, Done done) {
  auto fail = [&](absl::Status s) { done(s); };
  if (sender >= options_.num_members) {
    fail(absl::OutOfRangeError(absl::StrCat("sender ", sender, " is not a member")));
    return;
  }
  std::vector<Done> ready;
  std::vector<std::pair<Done, std::shared_ptr<const PartOutcome>>> excluded_ready;
  std::shared_ptr<const PartOutcome> outcome;
  absl::Status error;
  {
    absl::MutexLock lock(&mu_);
    if (excluded_[sender]) {
      error = absl::FailedPreconditionError("sender was excluded from this round");
    } else if (offset % options_.part_elements != 0 || offset >= options_.span_length) {
      error = absl::InvalidArgumentError(absl::StrCat("offset ", offset,
                                                      " is not the start of a part of this span"));
    } else {
      uint32_t index = static_cast<uint32_t>(offset / options_.part_elements);
      Part& p = parts_[index];
      if (count != PartLength(index)) {
        error = absl::InvalidArgumentError(
            absl::StrCat("part at ", offset, " has ", PartLength(index), " values, got ", count));
      } else if (!std::isfinite(weight) || weight < 0) {
        error = absl::InvalidArgumentError("weight must be finite and >= 0");
      } else if (!AllFinite(values, count)) {
        error = absl::InvalidArgumentError("non-finite values refused");
      } else if (p.given[sender]) {
        error = absl::InvalidArgumentError(absl::StrCat("part at ", offset, " sent twice"));
      } else if (p.outcome != nullptr) {
        error = absl::FailedPreconditionError("part was already reduced without this sender");
      }
      if (error.ok()) {
        p.given[sender] = true;
        p.weights[sender] = weight;
        p.weight_sum += weight;
        p.contributors++;
        p.inputs[sender].assign(values, values + count);
        last_seen_[sender] = now;
        given_count_[sender]++;
        pending_[sender]++;
        p.waiting.push_back(std::move(done));
        ready = MaybeReduceLocked(index, false, now);
        outcome = p.outcome;
      } else if (error.code() == absl::StatusCode::kInvalidArgument) {
        // Bad data: do not wait for this sender any longer.
        excluded_ready = ExcludeLocked(sender, now);
      }
    }
  }
  if (!error.ok()) {
    for (auto& [cb, out] : excluded_ready) cb(out);
    done(error);
    return;
  }
  for (auto& cb : ready) cb(outcome);
}

std::vector<std::pair<SpanReducer::Done, std::shared_ptr<const PartOutcome>>>
SpanReducer::ExcludeLocked(uint32_t sender, absl::Time now) {
  std::vector<std::pair<Done, std::shared_ptr<const PartOutcome>>> out;
  if (sender >= options_.num_members || excluded_[sender]) return out;
  excluded_[sender] = true;
  for (uint32_t i = 0; i < num_parts_; ++i) {
    for (auto& cb : MaybeReduceLocked(i, false, now)) out.push_back({std::move(cb), parts_[i].outcome});
  }
  return out;
}

void SpanReducer::Exclude(uint32_t sender) {
  std::vector<std::pair<Done, std::shared_ptr<const PartOutcome>>> ready;
  {
    absl::MutexLock lock(&mu_);
    ready = ExcludeLocked(sender, absl::Now());
  }
  for (auto& [cb, out] : ready) cb(out);
}

int SpanReducer::ExcludeStalled(absl::Time now, absl::Duration sender_timeout) {
  std::vector<std::pair<Done, std::shared_ptr<const PartOutcome>>> ready;
  int n = 0;
  {
    absl::MutexLock lock(&mu_);
    for (uint32_t s = 0; s < options_.num_members; ++s) {
      if (excluded_[s] || given_count_[s] == num_parts_ || pending_[s] > 0 ||
          s == options_.local_sender) {
        continue;
      }
      if (now - last_seen_[s] > sender_timeout) {
        auto r = ExcludeLocked(s, now);
        ready.insert(ready.end(), std::make_move_iterator(r.begin()),
                     std::make_move_iterator(r.end()));
        ++n;
      }
    }
  }
  for (auto& [cb, out] : ready) cb(out);
  return n;
}

void SpanReducer::Finish() {
  std::vector<std::pair<Done, std::shared_ptr<const PartOutcome>>> ready;
  {
    absl::MutexLock lock(&mu_);
    for (uint32_t i = 0; i < num_parts_; ++i) {
      for (auto& cb : MaybeReduceLocked(i, true, absl::Now())) ready.push_back({std::move(cb), parts_[i].outcome});
    }
    for (uint32_t s = 0; s < options_.num_members; ++s) excluded_[s] = true;
  }
  for (auto& [cb, out] : ready) cb(out);
}

absl::StatusOr<std::pair<std::vector<float>, double>> SpanReducer::LocalContribution(
    uint64_t offset) const {
  absl::MutexLock lock(&mu_);
  if (!options_.keep_local_inputs || !options_.local_sender.has_value() ||
      offset % options_.part_elements != 0 || offset >= options_.span_length) {
    return absl::NotFoundError(absl::StrCat("no contribution kept at offset ", offset));
  }
  const Part& p = parts_[offset / options_.part_elements];
  const uint32_t local = *options_.local_sender;
  if (!p.given[local] || p.outcome == nullptr) {
    return absl::NotFoundError(absl::StrCat("the part at ", offset, " is not reduced yet"));
  }
  return std::make_pair(p.kept_local, p.weights[local]);
}

bool SpanReducer::AllReduced() const {
  absl::MutexLock lock(&mu_);
  return reduced_ == num_parts_;
}

}  // namespace dd::averaging
