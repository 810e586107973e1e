// Gradient bookkeeping of a training step: collecting the gradients of the
// trained parameters, their global L2 norm, clipping to a maximum norm
// (torch.nn.utils.clip_grad_norm_), and the finiteness check that decides
// whether a step is taken or skipped.
#ifndef TRAINER_TRAINING_GRADIENTS_H_
#define TRAINER_TRAINING_GRADIENTS_H_

#include <ATen/ATen.h>

#include <vector>

namespace dd::training {

// Global L2 norm of the defined tensors (float64 accumulation), computed
// where they are with one transfer of the result. NaN or inf when any
// gradient holds one.
double GlobalNorm(const std::vector<at::Tensor>& grads);

// Scales the gradients in place so that their global norm is at most
// max_norm (coefficient max_norm / (norm + 1e-6), as torch). Returns the norm
// before clipping. max_norm <= 0 only measures.
double ClipGradNorm(std::vector<at::Tensor>& grads, double max_norm);

}  // namespace dd::training

#endif  // TRAINER_TRAINING_GRADIENTS_H_
