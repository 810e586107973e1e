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

// Linear layers: down [rank, in], up [out, rank]. Convolutions (LoCon, as
// kohya's LyCORIS-style conv adapters): down [rank, in, k, k] with the
// layer's stride and padding, up [out, rank, 1, 1].
struct LoraSlot {
  at::Tensor weight;  // the layer's own weight (same storage), for merging
  at::Tensor down;    // undefined: no adapter
  at::Tensor up;
  double scale = 1.0;
  int64_t stride = 1, padding = 0;  // convolutions
};

// A module's slots by the Linear's diffusers name (e.g.
// "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", or a text
// encoder's "text_model.encoder.layers.0.self_attn.q_proj").
using LoraSlots = std::map<std::string, std::shared_ptr<LoraSlot>>;

// A layer's output `y` (= W x + b) with the slot's adapter added, when one
// is attached.
inline at::Tensor WithLora(const at::Tensor& x, at::Tensor y, const LoraSlot* slot) {
  if (slot == nullptr || !slot->down.defined()) return y;
  if (slot->down.dim() == 4) {
    return y + at::conv2d(at::conv2d(x, slot->down, {}, {slot->stride, slot->stride},
                                     {slot->padding, slot->padding}),
                          slot->up) *
                   slot->scale;
  }
  return y + at::linear(at::linear(x, slot->down), slot->up) * slot->scale;
}

}  // namespace dd::model

#endif  // TRAINER_MODEL_LORA_SLOT_H_
