// Optimizers over named float32 parameters: AdamW with torch.optim.AdamW's
// exact arithmetic, and 8-bit AdamW (as bitsandbytes' AdamW8bit) whose two
// moment tensors are kept blockwise-quantized with the averaging codec's
// dynamic 8-bit code (1 byte per value plus one float per 4096 values, a
// quarter of AdamW's 8 bytes per parameter).
//
// The state (moments, step count) can be exported and restored exactly, for
// checkpoints and for a late-joining peer.
#ifndef TRAINER_TRAINING_OPTIMIZER_H_
#define TRAINER_TRAINING_OPTIMIZER_H_

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dd::training {

struct NamedTensor {
  std::string name;
  at::Tensor value;  // float32, updated in place
};

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // Applies one update to every parameter from grads[i] (same shape as
  // parameter i; an undefined gradient leaves that parameter untouched, as
  // torch does). InvalidArgument when the counts or shapes disagree.
  virtual absl::Status Step(const std::vector<at::Tensor>& grads, double lr) = 0;

  // Steps taken so far.
  virtual int64_t steps() const = 0;

  // The state as named tensors ("<param>.exp_avg", ..., "step").
  virtual std::map<std::string, at::Tensor> ExportState() const = 0;
  // Restores ExportState's output. InvalidArgument naming the tensor that is
  // missing or of the wrong shape or dtype.
  virtual absl::Status ImportState(const std::map<std::string, at::Tensor>& state) = 0;

  // Bytes the optimizer state holds.
  virtual int64_t StateBytes() const = 0;
};

// `params` must outlive the optimizer. InvalidArgument for a parameter that
// is not float32 or options outside their ranges.
absl::StatusOr<std::unique_ptr<Optimizer>> MakeAdamW(std::vector<NamedTensor> params,
                                                     const AdamWOptions& options);
absl::StatusOr<std::unique_ptr<Optimizer>> MakeAdamW8bit(std::vector<NamedTensor> params,
                                                         const AdamWOptions& options);

}  // namespace dd::training

#endif  // TRAINER_TRAINING_OPTIMIZER_H_
