// Building blocks shared by the UNet and the VAE: a weight table that checks
// names and shapes while modules are built (errors name the file and the
// tensor), and the layers diffusers composes (conv, linear, norms, resnet
// block, multi-head attention). ATen ops only; no torch::nn state.
#ifndef TRAINER_MODEL_LAYERS_H_
#define TRAINER_MODEL_LAYERS_H_

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "trainer/model/lora_slot.h"
#include "trainer/model/torch_compat.h"
#include "trainer/model/torch_tensors.h"

namespace dd::model {

// Collects tensors by name and checks their shapes while modules are built.
class WeightTable {
 public:
  WeightTable(std::map<std::string, at::Tensor> tensors, std::string source)
      : tensors_(std::move(tensors)), source_(std::move(source)) {}

  // A table that makes every requested tensor with random values (benchmarks
  // of configurations whose weights are not at hand).
  static WeightTable Random(uint64_t seed) {
    WeightTable t({}, "random");
    t.random_ = true;
    t.generator_ = at::detail::createCPUGenerator(seed);
    return t;
  }

  // A parameter as built: the float32 tensor the modules use, and the dtype
  // it had in the file (for saving it back the same way).
  using Parameter = ModelParameter;

  // The tensor `name` with `shape`, or an undefined tensor after recording
  // the first error.
  at::Tensor Get(const std::string& name, std::vector<int64_t> shape) {
    if (!status_.ok()) return at::Tensor();
    if (random_) {
      at::Tensor r = at::randn(shape, generator_, at::TensorOptions().dtype(at::kFloat)) * 0.02;
      used_.push_back({name, r, at::kFloat});
      return r;
    }
    auto it = tensors_.find(name);
    if (it == tensors_.end()) {
      status_ = absl::InvalidArgumentError(
          absl::StrCat(source_, ": missing tensor \"", name, "\""));
      return at::Tensor();
    }
    if (it->second.sizes().vec() != shape) {
      status_ = absl::InvalidArgumentError(absl::StrCat(
          source_, ": tensor \"", name, "\" has shape [", absl::StrJoin(it->second.sizes().vec(), ","),
          "] but the config needs [", absl::StrJoin(shape, ","), "]"));
      return at::Tensor();
    }
    at::Tensor value = it->second.to(at::kFloat);
    used_.push_back({name, value, it->second.scalar_type()});
    return value;
  }
  bool Has(const std::string& name) const { return tensors_.count(name) > 0; }
  // A LoRA slot for the Linear `name` whose weight is `weight`.
  std::shared_ptr<LoraSlot> AddLoraSlot(const std::string& name, const at::Tensor& weight) {
    auto slot = std::make_shared<LoraSlot>();
    slot->weight = weight;
    lora_slots_[name] = slot;
    return slot;
  }
  // The slots of every Linear built so far (moved out).
  LoraSlots TakeLoraSlots() { return std::move(lora_slots_); }
  const absl::Status& status() const { return status_; }
  // Every tensor handed out, in the order the modules asked for them.
  std::vector<Parameter> used_;

 private:
  std::map<std::string, at::Tensor> tensors_;
  std::string source_;
  absl::Status status_;
  bool random_ = false;
  at::Generator generator_;
  LoraSlots lora_slots_;
};

struct Conv {
  at::Tensor w, b;
  int64_t stride = 1, padding = 0;
  std::shared_ptr<LoraSlot> lora;
  void Load(WeightTable& t, const std::string& p, int64_t in, int64_t out, int64_t k,
            int64_t stride_ = 1) {
    w = t.Get(p + ".weight", {out, in, k, k});
    b = t.Get(p + ".bias", {out});
    stride = stride_;
    padding = k / 2;
    lora = t.AddLoraSlot(p, w);
    lora->stride = stride;
    lora->padding = padding;
  }
  at::Tensor operator()(const at::Tensor& x) const {
    return WithLora(x, at::conv2d(x, w, b, {stride, stride}, {padding, padding}), lora.get());
  }
};

struct Linear {
  at::Tensor w, b;
  std::shared_ptr<LoraSlot> lora;
  void Load(WeightTable& t, const std::string& p, int64_t in, int64_t out, bool bias = true) {
    w = t.Get(p + ".weight", {out, in});
    if (bias) b = t.Get(p + ".bias", {out});
    lora = t.AddLoraSlot(p, w);
  }
  at::Tensor operator()(const at::Tensor& x) const { return WithLora(x, at::linear(x, w, b), lora.get()); }
};

struct GroupNorm {
  at::Tensor w, b;
  int64_t groups = 32;
  double eps = 1e-5;
  void Load(WeightTable& t, const std::string& p, int64_t c, int64_t groups_, double eps_) {
    w = t.Get(p + ".weight", {c});
    b = t.Get(p + ".bias", {c});
    groups = groups_;
    eps = eps_;
  }
  // Normalisation runs in the weights' precision (float32) even when
  // autocast hands it bf16 activations, as CUDA autocast does; CPU kernels
  // of libtorch 1.13 refuse mixed dtypes.
  at::Tensor operator()(const at::Tensor& x) const {
    return at::group_norm(x.scalar_type() == w.scalar_type() ? x : x.to(w.scalar_type()), groups, w, b, eps);
  }
};

struct LayerNorm {
  at::Tensor w, b;
  double eps = 1e-5;
  void Load(WeightTable& t, const std::string& p, int64_t c) {
    w = t.Get(p + ".weight", {c});
    b = t.Get(p + ".bias", {c});
  }
  at::Tensor operator()(const at::Tensor& x) const {
    return at::layer_norm(x.scalar_type() == w.scalar_type() ? x : x.to(w.scalar_type()), {x.size(-1)}, w, b, eps);
  }
};

// diffusers' ResnetBlock2D ("default" time scale shift); `temb` 0 means no
// time embedding (the VAE's blocks).
struct Resnet {
  GroupNorm norm1, norm2;
  Conv conv1, conv2, shortcut;
  Linear time_proj;
  bool has_shortcut = false;
  bool has_time = false;
  void Load(WeightTable& t, const std::string& p, int64_t in, int64_t out, int64_t temb,
            int64_t groups, double eps) {
    norm1.Load(t, p + ".norm1", in, groups, eps);
    conv1.Load(t, p + ".conv1", in, out, 3);
    has_time = temb > 0;
    if (has_time) time_proj.Load(t, p + ".time_emb_proj", temb, out);
    norm2.Load(t, p + ".norm2", out, groups, eps);
    conv2.Load(t, p + ".conv2", out, out, 3);
    has_shortcut = in != out;
    if (has_shortcut) shortcut.Load(t, p + ".conv_shortcut", in, out, 1);
  }
  at::Tensor operator()(const at::Tensor& x, const at::Tensor& temb = at::Tensor()) const {
    at::Tensor h = conv1(at::silu(norm1(x)));
    if (has_time) h = h + time_proj(at::silu(temb)).unsqueeze(-1).unsqueeze(-1);
    h = conv2(at::silu(norm2(h)));
    return (has_shortcut ? shortcut(x) : x) + h;
  }
};

// Multi-head attention with diffusers' names (to_q/to_k/to_v/to_out.0).
struct Attention {
  Linear q, k, v, out;
  int64_t heads = 1;
  void Load(WeightTable& t, const std::string& p, int64_t dim, int64_t context_dim, int64_t heads_,
            bool qkv_bias = false) {
    heads = heads_;
    q.Load(t, p + ".to_q", dim, dim, qkv_bias);
    k.Load(t, p + ".to_k", context_dim, dim, qkv_bias);
    v.Load(t, p + ".to_v", context_dim, dim, qkv_bias);
    out.Load(t, p + ".to_out.0", dim, dim);
  }
  at::Tensor operator()(const at::Tensor& x, const at::Tensor& context) const {
    int64_t b = x.size(0), n = x.size(1), m = context.size(1), dim = x.size(2);
    int64_t d = dim / heads;
    auto split = [&](const at::Tensor& y, int64_t len) {
      return y.view({b, len, heads, d}).transpose(1, 2);
    };
    at::Tensor a = ScaledDotProductAttention(split(q(x), n), split(k(context), m),
                                             split(v(context), m), false);
    return out(a.transpose(1, 2).reshape({b, n, dim}));
  }
};

}  // namespace dd::model

#endif  // TRAINER_MODEL_LAYERS_H_
