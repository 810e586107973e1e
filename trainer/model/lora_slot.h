// The hook through which a Linear layer carries a low-rank adapter (LoRA):
// y = W x + b + scale · up(down(x)). Every Linear a WeightTable builds
// (layers.h) gets a slot, empty until an adapter is attached
// (trainer/model/lora.h attaches, loads, saves and merges them).
#ifndef TRAINER_MODEL_LORA_SLOT_H_
#define TRAINER_MODEL_LORA_SLOT_H_

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>

namespace dd::model {

struct LoraSlot {
  at::Tensor weight;  // the layer's own weight (same storage) [out, in], for merging
  at::Tensor down;    // [rank, in]; undefined: no adapter
  at::Tensor up;      // [out, rank]
  double scale = 1.0;
};

// A module's slots by the Linear's diffusers name (e.g.
// "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q").
using LoraSlots = std::map<std::string, std::shared_ptr<LoraSlot>>;

}  // namespace dd::model

#endif  // TRAINER_MODEL_LORA_SLOT_H_
