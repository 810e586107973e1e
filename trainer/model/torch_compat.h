// The few places where libtorch 1.13 (Debian, CPU) and 2.x (the GPU machine)
// differ, behind one header so the model code compiles against both.
#ifndef TRAINER_MODEL_TORCH_COMPAT_H_
#define TRAINER_MODEL_TORCH_COMPAT_H_

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <cmath>

namespace dd::model {

// softmax(q k^T / sqrt(d) [+ causal mask]) v over [..., seq, dim] tensors:
// the fused kernel where libtorch has it (2.x), the same math otherwise.
inline at::Tensor ScaledDotProductAttention(const at::Tensor& q, const at::Tensor& k,
                                            const at::Tensor& v, bool causal) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, {}, 0.0, causal);
#else
  double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1)) * scale;
  if (causal) {
    int64_t lq = q.size(-2), lk = k.size(-2);
    at::Tensor mask = at::ones({lq, lk}, q.options().dtype(at::kBool)).triu(1);
    scores = scores.masked_fill(mask, -std::numeric_limits<float>::infinity());
  }
  return at::matmul(at::softmax(scores, -1), v);
#endif
}

// Turns autocast (mixed precision) on or off for `device` ("cpu" or "cuda")
// with `dtype` (kBFloat16, kHalf). The API was renamed in libtorch 2.4.
inline void SetAutocast(bool cuda, bool enabled, at::ScalarType dtype) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  const at::DeviceType device = cuda ? at::kCUDA : at::kCPU;
  at::autocast::set_autocast_enabled(device, enabled);
  at::autocast::set_autocast_dtype(device, dtype);
#else
  if (cuda) {
    at::autocast::set_enabled(enabled);
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_cpu_enabled(enabled);
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
  if (!enabled) at::autocast::clear_cache();
}

// Lets cuDNN convolutions and cuBLAS matmuls run float32 work in TF32 on
// GPUs that have it (PyTorch's default: on for cuDNN, off for cuBLAS). TF32
// keeps 10 mantissa bits, so float32 results move by ~1e-3 relative: the
// parity check turns it off to hold 1e-4.
inline void SetAllowTF32(bool allow) {
  at::globalContext().setAllowTF32CuDNN(allow);
  at::globalContext().setAllowTF32CuBLAS(allow);
}

// Whether autocast is on for `device`, and with which dtype.
struct AutocastMode {
  bool enabled = false;
  at::ScalarType dtype = at::kBFloat16;
};

inline AutocastMode GetAutocast(bool cuda) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  const at::DeviceType device = cuda ? at::kCUDA : at::kCPU;
  return {at::autocast::is_autocast_enabled(device), at::autocast::get_autocast_dtype(device)};
#else
  if (cuda) return {at::autocast::is_enabled(), at::autocast::get_autocast_gpu_dtype()};
  return {at::autocast::is_cpu_enabled(), at::autocast::get_autocast_cpu_dtype()};
#endif
}

// Autocast as it stands for both device types.
struct AutocastState {
  AutocastMode cpu;
  AutocastMode cuda;
};

inline AutocastState CurrentAutocast() { return {GetAutocast(false), GetAutocast(true)}; }

// Sets `state` for the scope's lifetime and restores what was there before,
// also when an exception (a c10::Error) leaves the scope.
class ScopedAutocast {
 public:
  explicit ScopedAutocast(const AutocastState& state) : before_(CurrentAutocast()) { Set(state); }
  ~ScopedAutocast() { Set(before_); }
  ScopedAutocast(const ScopedAutocast&) = delete;
  ScopedAutocast& operator=(const ScopedAutocast&) = delete;

 private:
  static void Set(const AutocastState& s) {
    SetAutocast(/*cuda=*/false, s.cpu.enabled, s.cpu.dtype);
    SetAutocast(/*cuda=*/true, s.cuda.enabled, s.cuda.dtype);
  }
  const AutocastState before_;
};

}  // namespace dd::model

#endif  // TRAINER_MODEL_TORCH_COMPAT_H_
