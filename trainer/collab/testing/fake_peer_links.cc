#include "trainer/collab/testing/fake_peer_links.h"

#include <cmath>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status/status_macros.h"
#include "trainer/collab/synchronizer.h"
#include "trainer/collab/tampered_state.h"
#include "trainer/model/torch_tensors.h"

namespace dd::collab::testing {

float Target(const std::string& key, size_t i) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : key) h = (h ^ c) * 1099511628211ull;
  h ^= i * 0x9E3779B97F4A7C15ull;
  h = (h ^ (h >> 31)) * 0xBF58476D1CE4E5B9ull;
  return static_cast<float>(static_cast<double>(h >> 40) / double(1 << 24)) * 2.0f - 1.0f;
}

absl::StatusOr<double> FakeModel::AccumulateBatch(const data::Batch& batch) {
  if (grad_sum_.empty()) grad_sum_.assign(w_.size(), 0.0);
  double loss = 0;
  for (const std::string& key : batch.keys) {
    for (size_t i = 0; i < w_.size(); ++i) {
      const double d = w_[i] - Target(key, i);
      grad_sum_[i] += d;
      loss += 0.5 * d * d;
    }
    keys_.push_back(key);
  }
  samples_ += batch.keys.size();
  loss /= std::max<size_t>(1, batch.keys.size());
  loss_sum_ += loss;
  return loss;
}

absl::StatusOr<std::vector<float>> FakeModel::AccumulatedGradient() const {
  if (samples_ == 0) return absl::FailedPreconditionError("no gradients accumulated");
  std::vector<float> g(w_.size());
  for (size_t i = 0; i < w_.size(); ++i) g[i] = static_cast<float>(grad_sum_[i] / samples_);
  return g;
}

absl::StatusOr<training::StepReport> FakeModel::ApplyUpdate(const std::vector<float>* gradient,
                                                            bool) {
  std::vector<float> local;
  if (gradient == nullptr) {
    ASSIGN_OR_RETURN(local, AccumulatedGradient());
    gradient = &local;
  }
  if (gradient->size() != w_.size()) return absl::InvalidArgumentError("wrong gradient length");
  training::StepReport r;
  r.samples = samples_;
  r.loss = samples_ > 0 ? loss_sum_ : NAN;
  for (size_t i = 0; i < w_.size(); ++i) w_[i] -= static_cast<float>(lr_) * (*gradient)[i];
  r.step = ++step_;
  if (step_ == corrupt_after_step_) w_[0] += 1.0f;
  DropAccumulated();
  return r;
}

void FakeModel::DropAccumulated() {
  grad_sum_.assign(w_.size(), 0.0);
  samples_ = 0;
  keys_.clear();
  loss_sum_ = 0;
}

absl::Status FakeModel::ReadParameters(std::vector<float>* out) const {
  *out = w_;
  return absl::OkStatus();
}

absl::Status FakeModel::WriteParameters(const std::vector<float>& values) {
  if (values.size() != w_.size()) return absl::InvalidArgumentError("wrong parameter length");
  w_ = values;
  return absl::OkStatus();
}

absl::Status FakeModel::AddToParameters(const std::vector<float>& delta) {
  if (delta.size() != w_.size()) return absl::InvalidArgumentError("wrong parameter length");
  for (size_t i = 0; i < w_.size(); ++i) w_[i] += delta[i];
  return absl::OkStatus();
}

std::string FakeModel::ParameterHash() const { return HashOfValues(w_); }

absl::StatusOr<std::string> FakeModel::ExportState(const StateExtras& extras) const {
  std::map<std::string, at::Tensor> tensors = extras.tensors;
  tensors["param.w"] = at::from_blob(const_cast<float*>(w_.data()), {int64_t(w_.size())}, at::kFloat).clone();
  std::map<std::string, std::string> meta = extras.metadata;
  meta["step"] = absl::StrCat(step_);
  return model::SerializeTensors(tensors, meta);
}

absl::Status FakeModel::ImportState(const std::string& bytes, StateExtras* extras) {
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> meta;
  RETURN_IF_ERROR(model::ParseTensors(bytes, &tensors, &meta));
  auto it = tensors.find("param.w");
  if (it == tensors.end() || it->second.numel() != static_cast<int64_t>(w_.size())) {
    return absl::FailedPreconditionError("state does not fit the model");
  }
  int64_t step = 0;
  if (!absl::SimpleAtoi(meta["step"], &step)) return absl::FailedPreconditionError("no step");
  std::memcpy(w_.data(), it->second.contiguous().data_ptr<float>(), w_.size() * sizeof(float));
  step_ = step;
  DropAccumulated();
  tensors.erase(it);
  meta.erase("step");
  if (extras != nullptr) {
    extras->tensors = std::move(tensors);
    extras->metadata = std::move(meta);
  }
  return absl::OkStatus();
}

absl::Status FakeModel::RecordMetrics(const training::StepReport&,
                                      const std::map<std::string, double>& extra) {
  metrics.push_back(extra);
  return absl::OkStatus();
}

absl::StatusOr<data::Batch> FakeBatches::Next() {
  if (delay_ > absl::ZeroDuration()) absl::SleepFor(delay_);
  data::Batch b;
  for (int i = 0; i < batch_size_; ++i) b.keys.push_back(absl::StrCat(peer_, "-", next_++));
  return b;
}

class FakeCollaboration::Links final : public CoordinatorLink, public RoundAverager, public StateExchange {
 public:
  Links(FakeCollaboration* c, std::string id) : c_(c), id_(std::move(id)) {}
  std::string peer_id() const override { return id_; }
  absl::StatusOr<cv1::ReportProgressResponse> Report(
      const cv1::ReportProgressRequest& request) override {
    RETURN_IF_ERROR(c_->Membership(id_));
    for (const auto& result : request.round_results()) {
      absl::Status s = c_->planner_.RecordResult(id_, result.round_id(), result.applied(),
                                                 result.averaging_seconds());
      if (!s.ok() && !absl::IsNotFound(s)) return s;
    }
    c_->RecordReportedStep(id_, request.global_step());
    // As the coordinator does: the hash first, and an outvoted peer's
    // samples open no round.
    coordinator::HashVote::Verdict verdict;
    if (!request.params_hash().empty()) {
      verdict = c_->planner_.JudgeHash(id_, request.hash_step(), request.params_hash());
    }
    const bool delayed = verdict.diverged && c_->DelaysDivergedVerdict(id_);
    cv1::ReportProgressResponse r;
    if (request.finished() || (verdict.diverged && !delayed)) {
      r.set_global_step(c_->planner_.global_step());
    } else {
      ASSIGN_OR_RETURN(r, c_->planner_.Report(id_, request.global_step(),
                                              request.samples_accumulated(),
                                              request.samples_per_second(), 0,
                                              [](const std::string& id) {
                                                return coordinator::MemberInfo{"mem:" + id};
                                              }));
    }
    if (!request.finished()) {
      auto round = c_->planner_.RoundFor(id_, request.after_round_id());
      if (round.has_value()) *r.mutable_round() = *round;
    }
    if (delayed && !c_->ReleaseDivergedVerdict(id_, r.has_round())) verdict = {};
    r.set_diverged(verdict.diverged);
    if (verdict.diverged) r.set_consensus_hash(verdict.consensus);
    return r;
  }
  absl::StatusOr<std::optional<cv1::Round>> GetRound(uint64_t after) override {
    return c_->planner_.RoundFor(id_, after);
  }
  absl::StatusOr<uint64_t> GlobalStep() override { return c_->planner_.global_step(); }
  absl::StatusOr<cv1::GetStepHashResponse> StepHash(uint64_t step) override {
    return c_->planner_.ConfirmedHash(step);
  }
  absl::StatusOr<size_t> PeersBehind(uint64_t step) override { return c_->PeersBehind(id_, step); }
  void SetSamplesPerSecond(double) override {}
  absl::Status CheckMembership() override { return c_->Membership(id_); }
  absl::StatusOr<bool> UploadSampleGrid(uint64_t step, const std::string& path) override {
    c_->RecordUpload(id_, step, path);
    return true;
  }
  absl::StatusOr<averaging::AllReduceResult> Average(const cv1::Round& round,
                                                     std::vector<float>* values, double weight,
                                                     averaging::CodecErrors errors) override {
    return c_->Average(id_, round, values, weight, errors);
  }
  bool Wanted() const override { return c_->Wanted(id_); }
  void Publish(Snapshot s, bool current) override { c_->Publish(id_, std::move(s), current); }
  void StopServingCurrent() override { c_->StopServingCurrent(id_); }
  // The snapshot published at the boundary answers the same fetches at the
  // same time (only its bytes are not sent in the real exchange).
  void AtStepBoundary(uint64_t) override {}
  absl::StatusOr<Snapshot> FetchNewer(uint64_t step, const std::set<std::string>& refused) override {
    return c_->FetchNewer(id_, step, refused);
  }

 private:
  FakeCollaboration* const c_;
  const std::string id_;
};

FakeCollaboration::FakeCollaboration(uint64_t target, averaging::CodecId codec)
    : planner_(
          [&] {
            coordinator::RoundPlannerOptions o;
            o.target_batch_size = target;
            o.round_timeout = absl::Seconds(30);
            return o;
          }(),
          RealClock()),
      codec_(codec) {}

FakeCollaboration::~FakeCollaboration() = default;

#define DD_FAKE_LINKS(id)                                             \
  absl::MutexLock lock(&mu_);                                         \
  auto& l = links_[id];                                               \
  if (l == nullptr) l = std::make_unique<Links>(this, id);            \
  return l.get()

CoordinatorLink* FakeCollaboration::Coordinator(const std::string& id) { DD_FAKE_LINKS(id); }
RoundAverager* FakeCollaboration::Averager(const std::string& id) { DD_FAKE_LINKS(id); }
StateExchange* FakeCollaboration::States(const std::string& id) { DD_FAKE_LINKS(id); }
#undef DD_FAKE_LINKS

std::vector<std::string> FakeCollaboration::uploads() {
  absl::MutexLock lock(&mu_);
  return uploads_;
}

void FakeCollaboration::RecordUpload(const std::string& peer_id, uint64_t step,
                                     const std::string& path) {
  absl::MutexLock lock(&mu_);
  uploads_.push_back(absl::StrCat(peer_id, " ", step, " ", path));
}

void FakeCollaboration::RecordReportedStep(const std::string& peer_id, uint64_t step) {
  absl::MutexLock lock(&mu_);
  reported_steps_[peer_id] = step;
}

void FakeCollaboration::Evict(const std::string& peer_id) {
  absl::MutexLock lock(&mu_);
  evicted_.insert(peer_id);
}

void FakeCollaboration::Supersede(const std::string& peer_id) {
  absl::MutexLock lock(&mu_);
  superseded_.insert(peer_id);
}

void FakeCollaboration::DelayDivergedVerdictUntilARound(const std::string& peer_id) {
  absl::MutexLock lock(&mu_);
  verdicts_delayed_.insert(peer_id);
}

bool FakeCollaboration::DelaysDivergedVerdict(const std::string& peer_id) {
  absl::MutexLock lock(&mu_);
  return verdicts_delayed_.count(peer_id) > 0;
}

bool FakeCollaboration::ReleaseDivergedVerdict(const std::string& peer_id, bool in_a_round) {
  absl::MutexLock lock(&mu_);
  if (in_a_round) verdicts_delayed_.erase(peer_id);
  return in_a_round;
}

absl::Status FakeCollaboration::Membership(const std::string& peer_id) {
  absl::MutexLock lock(&mu_);
  if (evicted_.count(peer_id) > 0) {
    return absl::NotFoundError(absl::StrCat("peer ", peer_id, " is not a member of the run (test)"));
  }
  if (superseded_.count(peer_id) > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("peer ", peer_id, " incarnation 1 was superseded by incarnation 2 (test)"));
  }
  return absl::OkStatus();
}

size_t FakeCollaboration::PeersBehind(const std::string& peer_id, uint64_t step) {
  absl::MutexLock lock(&mu_);
  size_t behind = 0;
  for (const auto& [id, link] : links_) {  // every peer made: joined
    auto it = reported_steps_.find(id);
    behind += id != peer_id && (it == reported_steps_.end() || it->second < step);
  }
  return behind;
}

void FakeCollaboration::FailRound(uint64_t id) {
  absl::MutexLock lock(&mu_);
  failing_.insert(id);
}

void FakeCollaboration::AbandonRound(uint64_t id) {
  absl::MutexLock lock(&mu_);
  abandoned_.insert(id);
}

int FakeCollaboration::fetches() {
  absl::MutexLock lock(&mu_);
  return fetches_;
}

void FakeCollaboration::SetRoundDelay(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  delay_ = d;
}

absl::StatusOr<averaging::AllReduceResult> FakeCollaboration::Average(
    const std::string& id, const cv1::Round& round, std::vector<float>* values, double weight,
    averaging::CodecErrors errors) {
  absl::Duration delay;
  {
    absl::MutexLock lock(&mu_);
    delay = delay_;
  }
  absl::SleepFor(delay);
  const averaging::Codec& codec = averaging::CodecFor(codec_);
  std::vector<float> sent(values->size());
  std::string bytes;
  codec.Encode(values->data(), values->size(), &bytes);
  RETURN_IF_ERROR(codec.Decode(bytes, values->size(), sent.data()));
  if (errors.sent != nullptr) {
    for (size_t i = 0; i < sent.size(); ++i) errors.sent[i] = (*values)[i] - sent[i];
  }
  absl::MutexLock lock(&mu_);
  if (failing_.count(round.round_id()) > 0) return absl::UnavailableError("round failed (test)");
  if (abandoned_.count(round.round_id()) > 0) {
    return absl::AbortedError("an audit found a reduction dishonest (test)");
  }
  RoundData& r = rounds_[round.round_id()];
  r.parts[id] = {std::move(sent), weight};
  r.mean_errors[id] = errors.mean;
  auto all_in = [&r, &round] { return r.parts.size() == static_cast<size_t>(round.members_size()); };
  if (!mu_.AwaitWithTimeout(absl::Condition(&all_in), absl::Seconds(30))) {
    return absl::DeadlineExceededError("members missing (test)");
  }
  if (!r.averaged) {
    std::vector<double> sum(values->size(), 0.0);
    double total = 0;
    for (const auto& [peer, part] : r.parts) {  // in peer-id order: the same sum everywhere
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += part.second * part.first[i];
      total += part.second;
    }
    std::vector<float> mean(sum.size());
    for (size_t i = 0; i < sum.size(); ++i) mean[i] = total > 0 ? float(sum[i] / total) : 0.0f;
    r.mean.resize(mean.size());
    // Member m reduces span m: its residual joins that span's mean, and
    // keeps what the codec drops of it.
    const std::vector<uint64_t> spans = averaging::SplitSpans(mean.size(), round.members_size());
    for (int m = 0; m < round.members_size(); ++m) {
      const size_t lo = spans[m], len = spans[m + 1] - spans[m];
      float* error = r.mean_errors[round.members(m).peer_id()];
      if (error != nullptr) {
        for (size_t i = lo; i < lo + len; ++i) mean[i] += error[i];
      }
      bytes.clear();
      codec.Encode(mean.data() + lo, len, &bytes);
      RETURN_IF_ERROR(codec.Decode(bytes, len, r.mean.data() + lo));
      if (error != nullptr) {
        for (size_t i = lo; i < lo + len; ++i) error[i] = mean[i] - r.mean[i];
      }
    }
    r.averaged = true;
  }
  *values = r.mean;
  averaging::AllReduceResult result;
  result.fraction_averaged = 1;
  result.bytes_sent = result.bytes_received = codec.EncodedSize(values->size());
  return result;
}

void FakeCollaboration::AlterStatesServedBy(const std::string& peer_id) {
  absl::MutexLock lock(&mu_);
  lying_donors_.insert(peer_id);
}

void FakeCollaboration::Publish(const std::string& id, StateExchange::Snapshot s, bool current) {
  absl::MutexLock lock(&mu_);
  if (current) {
    serving_current_.insert(id);
  } else {
    serving_current_.erase(id);
  }
  if (lying_donors_.count(id) > 0) {
    // As a trainer run with --serve_tampered_state_for_test=weights serves.
    auto altered = TamperedState(StateTamper::kWeights, s.bytes, /*max_bytes=*/0);  // unused here
    if (altered.ok()) s.bytes = std::move(*altered);
  }
  snapshots_[id] = std::move(s);
  wanted_.erase(id);
}

void FakeCollaboration::StopServingCurrent(const std::string& id) {
  absl::MutexLock lock(&mu_);
  serving_current_.erase(id);
}

bool FakeCollaboration::Wanted(const std::string& id) {
  absl::MutexLock lock(&mu_);
  return wanted_.count(id) > 0;
}

absl::StatusOr<StateExchange::Snapshot> FakeCollaboration::FetchNewer(
    const std::string& id, uint64_t step, const std::set<std::string>& refused) {
  absl::MutexLock lock(&mu_);
  ++fetches_;
  for (const auto& [peer, link] : links_) {
    if (peer != id) wanted_.insert(peer);
  }
  const StateExchange::Snapshot* found = nullptr;
  std::string found_donor;
  bool nobody_ahead = false;
  // A lying donor answers first (the attack at its most effective), until
  // the fetching peer refuses it. As in the real exchange, when every peer
  // asked has answered with a state that is not newer, nobody is ahead (the
  // session asks again later).
  // A peer answers a fetch when it serves a current snapshot, or once it
  // published one after the fetch asked for it.
  auto answers = [&](const std::string& peer) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return wanted_.count(peer) == 0 || serving_current_.count(peer) > 0;
  };
  auto newer = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (const std::string& liar : lying_donors_) {
      if (liar != id && refused.count(liar) == 0 && wanted_.count(liar) > 0) return false;
    }
    for (bool liars : {true, false}) {
      for (const auto& [peer, s] : snapshots_) {
        if (lying_donors_.count(peer) > 0 != liars) continue;
        if (peer != id && s.global_step > step && answers(peer) && refused.count(peer) == 0) {
          found = &s;
          found_donor = peer;
          return true;
        }
      }
    }
    bool asked = false;
    for (const auto& [peer, link] : links_) {
      if (peer == id || refused.count(peer) > 0) continue;
      if (!answers(peer) || snapshots_.count(peer) == 0) return false;
      asked = true;
    }
    nobody_ahead = asked;
    return nobody_ahead;
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&newer), absl::Seconds(5)) || found == nullptr) {
    return absl::FailedPreconditionError("no peer is ahead (test)");
  }
  StateExchange::Snapshot out = *found;
  out.donor = found_donor;
  return out;
}

}  // namespace dd::collab::testing
