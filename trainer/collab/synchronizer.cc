#include "trainer/collab/synchronizer.h"

#include <cmath>
#include <cstring>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/crypto/sha256.h"
#include "common/thread/parallel_for.h"
#include "common/status/status_macros.h"

namespace dd::collab {
namespace {

bool AllFinite(const std::vector<float>& v) { return averaging::AllFinite(v.data(), v.size()); }

at::Tensor ToTensor(const std::vector<float>& v) {
  return at::from_blob(const_cast<float*>(v.data()), {static_cast<int64_t>(v.size())}, at::kFloat)
      .clone();
}

absl::StatusOr<std::vector<float>> FromTensor(const std::map<std::string, at::Tensor>& tensors,
                                              const std::string& name, size_t n) {
  auto it = tensors.find(name);
  if (it == tensors.end()) return absl::FailedPreconditionError(absl::StrCat("state has no ", name));
  at::Tensor t = it->second.to(at::kCPU, at::kFloat).contiguous();
  if (t.dim() != 1 || static_cast<size_t>(t.numel()) != n) {
    return absl::FailedPreconditionError(
        absl::StrCat(name, " has ", t.numel(), " values, the model ", n));
  }
  std::vector<float> out(n);
  std::memcpy(out.data(), t.data_ptr<float>(), n * sizeof(float));
  return out;
}

class GradientSync final : public Synchronizer {
 public:
  explicit GradientSync(LocalModel* model) : model_(model) {}
  SyncMode mode() const override { return SyncMode::kGradients; }
  bool Overlaps() const override { return false; }

  absl::StatusOr<std::optional<training::StepReport>> AfterBatch(int64_t) override {
    return std::nullopt;
  }
  bool AtBoundary() const override { return true; }
  int64_t samples() const override { return model_->accumulated_samples(); }
  bool MayTrain(int64_t cap) const override {
    return cap <= 0 || model_->accumulated_samples() < cap;
  }

  absl::StatusOr<Contribution> Contribute(uint64_t global_step, bool nan_for_test) override {
    Contribution c;
    c.global_step = global_step;
    c.samples = model_->accumulated_samples();
    c.weight = static_cast<double>(c.samples);
    if (c.samples > 0) {
      ASSIGN_OR_RETURN(c.values, model_->AccumulatedGradient());
    } else {
      c.values.assign(model_->num_elements(), 0.0f);
    }
    if (nan_for_test && !c.values.empty()) c.values[c.values.size() / 2] = NAN;
    c.local_finite = AllFinite(c.values);
    if (!c.local_finite) {
      // Take part with nothing: zeros at weight 0 keep the round's spans
      // served and leave the others' mean untouched, and this peer applies
      // the same averaged update as everyone else.
      std::fill(c.values.begin(), c.values.end(), 0.0f);
      c.weight = 0;
    }
    if (c.weight > 0) c.keys = model_->AccumulatedKeys();
    return c;
  }

  // The gradient comes from the model, between batches: nothing is left
  // for the round's thread.
  absl::Status Prepare(Contribution&) override { return absl::OkStatus(); }
  absl::Status Conclude(Contribution&) override { return absl::OkStatus(); }

  absl::StatusOr<training::StepReport> Apply(Contribution& c) override {
    return model_->ApplyUpdate(&c.values, c.local_finite);
  }
  void Drop() override { model_->DropAccumulated(); }
  std::string Hash() const override { return model_->ParameterHash(); }
  LocalModel::StateExtras Extras() const override { return {}; }
  absl::Status Restore(const LocalModel::StateExtras&) override { return absl::OkStatus(); }
  absl::Status BeginOutput() override { return absl::OkStatus(); }
  absl::Status EndOutput() override { return absl::OkStatus(); }

 private:
  LocalModel* const model_;
};

class OuterSync final : public Synchronizer {
 public:
  OuterSync(LocalModel* model, const OuterOptions& options, int accumulation,
            std::vector<float> global)
      : model_(model),
        options_(options),
        accumulation_(std::max(1, accumulation)),
        outer_(std::move(global), options),
        feedback_(options.error_feedback ? outer_.size() : 0) {}

  SyncMode mode() const override { return SyncMode::kOuter; }
  bool Overlaps() const override { return options_.overlap; }

  absl::StatusOr<std::optional<training::StepReport>> AfterBatch(int64_t samples) override {
    samples_ += samples;
    if (++batches_ < accumulation_) return std::nullopt;
    batches_ = 0;
    ASSIGN_OR_RETURN(training::StepReport local, model_->ApplyUpdate(nullptr, true));
    ++local_steps_;
    if (std::isfinite(local.loss)) {
      loss_sum_ += local.loss;
      ++loss_steps_;
    }
    return local;
  }
  bool AtBoundary() const override { return batches_ == 0; }
  int64_t samples() const override { return samples_; }
  bool MayTrain(int64_t) const override {
    return local_steps_ < MaxLocalSteps(options_) || batches_ > 0;
  }

  absl::StatusOr<Contribution> Contribute(uint64_t global_step, bool nan_for_test) override {
    if (batches_ != 0) return absl::FailedPreconditionError("contribution inside a local step");
    Contribution c;
    c.global_step = global_step;
    c.samples = samples_;
    c.loss = loss_steps_ > 0 ? loss_sum_ / loss_steps_ : NAN;
    c.weight = static_cast<double>(samples_);
    c.poison_for_test = nan_for_test;
    // The one model-sized pass between local steps: a copy of the weights.
    c.local_at_contribution = Spare();
    RETURN_IF_ERROR(model_->ReadParameters(&c.local_at_contribution));
    // The round overwrites the residual with what the codec drops of these
    // values (0 for zeros sent at weight 0), and the means' residual for the
    // span this peer reduces.
    if (options_.error_feedback) c.codec_errors = {feedback_.data(), feedback_.mean_data()};
    samples_ = 0;
    local_steps_ = 0;
    loss_sum_ = 0;
    loss_steps_ = 0;
    return c;
  }

  absl::Status Prepare(Contribution& c) override {
    c.values = Spare();
    c.values.resize(outer_.size());
    outer_.PseudoGradient(c.local_at_contribution.data(), c.values.data());
    if (options_.error_feedback) feedback_.AddTo(c.values.data());
    if (c.poison_for_test && !c.values.empty()) c.values[c.values.size() / 2] = NAN;
    c.local_finite = AllFinite(c.values);
    if (!c.local_finite) {
      std::fill(c.values.begin(), c.values.end(), 0.0f);
      c.weight = 0;
    }
    return absl::OkStatus();
  }

  absl::Status Conclude(Contribution& c) override {
    c.next_global = Spare();
    c.next_momentum = Spare();
    RETURN_IF_ERROR(outer_.StepInto(c.values.data(), &c.next_global, &c.next_momentum));
    if (options_.overlap) {
      // w ← θ_{k+1} + (w − s_k) is applied as w += θ_{k+1} − s_k: one pass
      // between local steps, where the weights live.
      c.correction = Spare();
      c.correction.resize(c.next_global.size());
      const float* const next = c.next_global.data();
      const float* const at = c.local_at_contribution.data();
      float* const out = c.correction.data();
      ParallelFor(c.correction.size(), [&](size_t begin, size_t end) {
        for (size_t i = begin; i < end; ++i) out[i] = next[i] - at[i];
      });
    }
    return absl::OkStatus();
  }

  absl::StatusOr<training::StepReport> Apply(Contribution& c) override {
    if (c.next_global.size() != outer_.size()) {
      return absl::FailedPreconditionError("the round's outer step was not prepared");
    }
    // θ_{k+1} and m_{k+1} become current (the previous ones stay in the
    // contribution's vectors and are reused).
    RETURN_IF_ERROR(outer_.Adopt(&c.next_global, &c.next_momentum));
    // The local weights restart from the new θ; with overlap they keep the
    // progress of the local steps taken while the round ran (it joins the
    // next pseudo-gradient).
    const bool progressed = local_steps_ > 0 || batches_ > 0;
    if (options_.overlap && progressed && c.correction.size() == outer_.size()) {
      RETURN_IF_ERROR(model_->AddToParameters(c.correction));
    } else {
      // No local step since the contribution: the weights are θ exactly.
      RETURN_IF_ERROR(model_->WriteParameters(outer_.global()));
    }
    for (std::vector<float>* v : {&c.values, &c.local_at_contribution, &c.correction,
                                  &c.next_global, &c.next_momentum}) {
      Recycle(std::move(*v));
    }
    training::StepReport r;
    r.step = static_cast<int64_t>(c.global_step) + 1;
    r.loss = c.loss;
    r.samples = c.samples;
    return r;
  }

  void Drop() override {
    model_->DropAccumulated();
    batches_ = local_steps_ = samples_ = 0;
    loss_sum_ = 0;
    loss_steps_ = 0;
    feedback_.Reset();
    absl::Status s = model_->WriteParameters(outer_.global());
    if (!s.ok()) LOG(ERROR) << "restoring the global weights: " << s;
  }

  std::string Hash() const override { return HashOfValues(outer_.global()); }

  LocalModel::StateExtras Extras() const override {
    LocalModel::StateExtras e;
    e.tensors["outer.global"] = ToTensor(outer_.global());
    e.tensors["outer.momentum"] = ToTensor(outer_.momentum());
    e.metadata["sync"] = "outer";
    return e;
  }

  absl::Status Restore(const LocalModel::StateExtras& e) override {
    ASSIGN_OR_RETURN(std::vector<float> global, FromTensor(e.tensors, "outer.global", outer_.size()));
    ASSIGN_OR_RETURN(std::vector<float> momentum,
                     FromTensor(e.tensors, "outer.momentum", outer_.size()));
    RETURN_IF_ERROR(outer_.Restore(std::move(global), std::move(momentum)));
    Drop();  // local weights = the downloaded θ, nothing carried over
    return absl::OkStatus();
  }

  absl::Status BeginOutput() override {
    RETURN_IF_ERROR(model_->ReadParameters(&saved_local_));
    return model_->WriteParameters(outer_.global());
  }
  absl::Status EndOutput() override {
    absl::Status s = model_->WriteParameters(saved_local_);
    saved_local_.clear();
    saved_local_.shrink_to_fit();
    return s;
  }

 private:
  // Model-sized buffers are reused across outer steps: a fresh one is
  // mapped and page-faulted in each time (a fifth of a round's CPU time on
  // the dev VM, tools/bench/utilisation_bench.sh). Taken and given back on
  // the session's and the round's threads.
  std::vector<float> Spare() {
    absl::MutexLock lock(&spare_mu_);
    if (spare_.empty()) return {};
    std::vector<float> v = std::move(spare_.back());
    spare_.pop_back();
    return v;
  }
  void Recycle(std::vector<float> v) {
    absl::MutexLock lock(&spare_mu_);
    if (v.capacity() >= outer_.size() && spare_.size() < kSpares) spare_.push_back(std::move(v));
  }
  static constexpr size_t kSpares = 6;

  LocalModel* const model_;
  const OuterOptions options_;
  const int accumulation_;
  OuterOptimizer outer_;
  ErrorFeedback feedback_;
  int64_t batches_ = 0;      // of the local step being accumulated
  int64_t local_steps_ = 0;  // since the last contribution
  int64_t samples_ = 0;      // since the last contribution
  double loss_sum_ = 0;
  int64_t loss_steps_ = 0;
  std::vector<float> saved_local_;
  absl::Mutex spare_mu_;
  std::vector<std::vector<float>> spare_ ABSL_GUARDED_BY(spare_mu_);
};

}  // namespace

std::string HashOfValues(const std::vector<float>& values) {
  return DigestToHex(Sha256Of(absl::string_view(reinterpret_cast<const char*>(values.data()),
                                                values.size() * sizeof(float))));
}

std::unique_ptr<Synchronizer> MakeGradientSync(LocalModel* model) {
  return std::make_unique<GradientSync>(model);
}

absl::StatusOr<std::unique_ptr<Synchronizer>> MakeOuterSync(LocalModel* model,
                                                            const OuterOptions& options,
                                                            int gradient_accumulation_steps) {
  std::vector<float> global;
  RETURN_IF_ERROR(model->ReadParameters(&global));
  return std::unique_ptr<Synchronizer>(
      new OuterSync(model, options, gradient_accumulation_steps, std::move(global)));
}

}  // namespace dd::collab
