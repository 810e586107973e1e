#include "trainer/training/optimizer.h"

#include <ATen/core/grad_mode.h>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "trainer/averaging/codec.h"

namespace dd::training {
namespace {

absl::Status CheckParams(const std::vector<NamedTensor>& params, const AdamWOptions& o) {
  if (!(o.beta1 >= 0 && o.beta1 < 1) || !(o.beta2 >= 0 && o.beta2 < 1) || !(o.eps > 0) ||
      !(o.weight_decay >= 0)) {
    return absl::InvalidArgumentError("AdamW needs 0 <= betas < 1, eps > 0, weight_decay >= 0");
  }
  for (const NamedTensor& p : params) {
    if (!p.value.defined() || p.value.scalar_type() != at::kFloat || !p.value.is_contiguous()) {
      return absl::InvalidArgumentError(absl::StrCat("parameter ", p.name,
                                                     " is not a contiguous float32 tensor"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckGrads(const std::vector<NamedTensor>& params, const std::vector<at::Tensor>& grads) {
  if (grads.size() != params.size()) {
    return absl::InvalidArgumentError(absl::StrCat(grads.size(), " gradients for ", params.size(),
                                                   " parameters"));
  }
  for (size_t i = 0; i < grads.size(); ++i) {
    if (grads[i].defined() && grads[i].sizes() != params[i].value.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("gradient of ", params[i].name, " has shape ",
                                                     c10::str(grads[i].sizes()), ", expected ",
                                                     c10::str(params[i].value.sizes())));
    }
  }
  return absl::OkStatus();
}

absl::Status Expect(const std::map<std::string, at::Tensor>& state, const std::string& key,
                    at::IntArrayRef shape, at::ScalarType dtype, at::Tensor* out) {
  auto it = state.find(key);
  if (it == state.end()) return absl::InvalidArgumentError(absl::StrCat("optimizer state lacks ", key));
  if (it->second.sizes() != shape || it->second.scalar_type() != dtype) {
    return absl::InvalidArgumentError(absl::StrCat("optimizer state ", key, " has shape ",
                                                   c10::str(it->second.sizes()), " ",
                                                   c10::toString(it->second.scalar_type())));
  }
  *out = it->second.clone();
  return absl::OkStatus();
}

// torch.optim.AdamW (single-tensor path), operation for operation, so that
// results agree with PyTorch to float rounding.
void AdamWUpdate(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg,
                 at::Tensor& exp_avg_sq, int64_t step, double lr, const AdamWOptions& o) {
  param.mul_(1 - lr * o.weight_decay);
  exp_avg.lerp_(grad, 1 - o.beta1);
  exp_avg_sq.mul_(o.beta2).addcmul_(grad, grad, 1 - o.beta2);
  const double bias_correction1 = 1 - std::pow(o.beta1, static_cast<double>(step));
  const double bias_correction2 = 1 - std::pow(o.beta2, static_cast<double>(step));
  const double step_size = lr / bias_correction1;
  at::Tensor denom = (exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(o.eps);
  param.addcdiv_(exp_avg, denom, -step_size);
}

// What AdamW and 8-bit AdamW share: parameters, step count, two moment
// tensors per parameter (float32, or the 8-bit encoding's bytes) exported
// under "<param><avg_key>" / "<param><avg_sq_key>", and restored only when
// every one has the expected shape and dtype.
class AdamWBase : public Optimizer {
 public:
  AdamWBase(std::vector<NamedTensor> params, const AdamWOptions& o, std::string avg_key,
            std::string avg_sq_key)
      : params_(std::move(params)), o_(o), avg_key_(std::move(avg_key)),
        avg_sq_key_(std::move(avg_sq_key)) {}

  absl::Status Step(const std::vector<at::Tensor>& grads, double lr) override {
    if (absl::Status s = CheckGrads(params_, grads); !s.ok()) return s;
    ++step_;
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i) {
      if (!grads[i].defined()) continue;
      if (absl::Status s = Update(i, grads[i], lr); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  int64_t steps() const override { return step_; }

  std::map<std::string, at::Tensor> ExportState() const override {
    std::map<std::string, at::Tensor> out;
    out["step"] = at::tensor({step_}, at::kLong);
    for (size_t i = 0; i < params_.size(); ++i) {
      out[params_[i].name + avg_key_] = exp_avg_[i].clone();
      out[params_[i].name + avg_sq_key_] = exp_avg_sq_[i].clone();
    }
    return out;
  }

  absl::Status ImportState(const std::map<std::string, at::Tensor>& state) override {
    at::Tensor step;
    if (absl::Status s = Expect(state, "step", {1}, at::kLong, &step); !s.ok()) return s;
    std::vector<at::Tensor> m(params_.size()), v(params_.size());
    for (size_t i = 0; i < params_.size(); ++i) {
      const std::vector<int64_t> shape = MomentShape(i);
      const at::ScalarType dtype = exp_avg_[i].scalar_type();
      if (absl::Status s = Expect(state, params_[i].name + avg_key_, shape, dtype, &m[i]); !s.ok()) return s;
      if (absl::Status s = Expect(state, params_[i].name + avg_sq_key_, shape, dtype, &v[i]); !s.ok()) return s;
    }
    for (size_t i = 0; i < params_.size(); ++i) {
      m[i] = m[i].to(exp_avg_[i].device());  // the state lives beside its parameter
      v[i] = v[i].to(exp_avg_sq_[i].device());
    }
    step_ = step.item<int64_t>();
    exp_avg_ = std::move(m);
    exp_avg_sq_ = std::move(v);
    return absl::OkStatus();
  }

  int64_t StateBytes() const override {
    int64_t n = 0;
    for (size_t i = 0; i < exp_avg_.size(); ++i) n += exp_avg_[i].nbytes() + exp_avg_sq_[i].nbytes();
    return n;
  }

 protected:
  // One parameter's update from its gradient (step_ already advanced).
  virtual absl::Status Update(size_t i, const at::Tensor& grad, double lr) = 0;
  // The shape of parameter i's stored moments.
  virtual std::vector<int64_t> MomentShape(size_t i) const = 0;

  std::vector<NamedTensor> params_;
  const AdamWOptions o_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  int64_t step_ = 0;

 private:
  const std::string avg_key_, avg_sq_key_;
};

class AdamW : public AdamWBase {
 public:
  AdamW(std::vector<NamedTensor> params, const AdamWOptions& o)
      : AdamWBase(std::move(params), o, ".exp_avg", ".exp_avg_sq") {
    for (const NamedTensor& p : params_) {
      exp_avg_.push_back(at::zeros_like(p.value));
      exp_avg_sq_.push_back(at::zeros_like(p.value));
    }
  }

 protected:
  absl::Status Update(size_t i, const at::Tensor& grad, double lr) override {
    at::Tensor p = params_[i].value;
    AdamWUpdate(p, grad, exp_avg_[i], exp_avg_sq_[i], step_, lr, o_);
    return absl::OkStatus();
  }
  std::vector<int64_t> MomentShape(size_t i) const override { return params_[i].value.sizes().vec(); }
};

// 8-bit AdamW: moments live as blockwise-8-bit bytes (uint8 tensors) and
// are expanded to float32 one parameter at a time during the step.
class AdamW8bit : public AdamWBase {
 public:
  AdamW8bit(std::vector<NamedTensor> params, const AdamWOptions& o)
      : AdamWBase(std::move(params), o, ".exp_avg_8bit", ".exp_avg_sq_8bit"),
        codec_(averaging::CodecFor(averaging::CodecId::kBlockwise8Bit)) {
    for (const NamedTensor& p : params_) {
      std::vector<float> zeros(p.value.numel(), 0.0f);
      std::string encoded;
      codec_.Encode(zeros.data(), zeros.size(), &encoded);
      exp_avg_.push_back(Bytes(encoded));
      exp_avg_sq_.push_back(Bytes(encoded));
    }
  }

 protected:
  absl::Status Update(size_t i, const at::Tensor& grad, double lr) override {
    at::Tensor p = params_[i].value;
    const size_t n = static_cast<size_t>(p.numel());
    at::Tensor m = at::empty_like(p), v = at::empty_like(p);
    if (absl::Status s = codec_.Decode(View(exp_avg_[i]), n, m.data_ptr<float>()); !s.ok()) return s;
    if (absl::Status s = codec_.Decode(View(exp_avg_sq_[i]), n, v.data_ptr<float>()); !s.ok()) return s;
    AdamWUpdate(p, grad.contiguous(), m, v, step_, lr, o_);
    if (!averaging::AllFinite(m.data_ptr<float>(), n) || !averaging::AllFinite(v.data_ptr<float>(), n)) {
      return absl::InvalidArgumentError(absl::StrCat("non-finite moments for ", params_[i].name));
    }
    std::string encoded;
    codec_.Encode(m.data_ptr<float>(), n, &encoded);
    exp_avg_[i] = Bytes(encoded);
    encoded.clear();
    codec_.Encode(v.data_ptr<float>(), n, &encoded);
    exp_avg_sq_[i] = Bytes(encoded);
    return absl::OkStatus();
  }
  std::vector<int64_t> MomentShape(size_t i) const override {
    return {static_cast<int64_t>(codec_.EncodedSize(params_[i].value.numel()))};
  }

 private:
  static at::Tensor Bytes(const std::string& s) {
    return at::from_blob(const_cast<char*>(s.data()), {static_cast<int64_t>(s.size())}, at::kByte).clone();
  }
  static absl::string_view View(const at::Tensor& t) {
    return absl::string_view(static_cast<const char*>(t.data_ptr()), t.nbytes());
  }

  const averaging::Codec& codec_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Optimizer>> MakeAdamW(std::vector<NamedTensor> params,
                                                     const AdamWOptions& options) {
  if (absl::Status s = CheckParams(params, options); !s.ok()) return s;
  return std::unique_ptr<Optimizer>(new AdamW(std::move(params), options));
}

absl::StatusOr<std::unique_ptr<Optimizer>> MakeAdamW8bit(std::vector<NamedTensor> params,
                                                         const AdamWOptions& options) {
  if (absl::Status s = CheckParams(params, options); !s.ok()) return s;
  return std::unique_ptr<Optimizer>(new AdamW8bit(std::move(params), options));
}

}  // namespace dd::training
