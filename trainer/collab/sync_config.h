// SyncConfig: how the peers of a run keep their weights in step, read from
// the coordinator's run JSON so that every peer of a run agrees.
//
//   "sync": "gradients"   every global step averages the accumulated
//                         gradient (the default; hivemind's way)
//   "sync": "outer"       every peer takes "local_steps" (H) optimizer steps
//                         on its own data, then the peers average the change
//                         of the weights (the pseudo-gradient) and apply one
//                         outer Nesterov-SGD step (DiLoCo)
//
// Outer keys: "local_steps" (H, default 32), "max_local_steps" (default 2H,
// at least H: how far a peer trains on while its round has not opened),
// "outer_lr" (0.7),
// "outer_momentum" (0.9), "outer_nesterov" (true), "error_feedback" (true:
// what the codec drops from a peer's pseudo-gradient joins its next one),
// "overlap" (true: the exchange of outer step k runs while the local steps
// of k+1 are computed; see docs/architecture.md). "codec" applies to both
// modes.
//
// Robustness keys (both modes; docs/security.md): "open_run" (false: a run
// that strangers may join; makes CenteredClip the default aggregation),
// "aggregation" ("mean" or "centered_clip"), "clip_tau" (1.0: CenteredClip's
// radius, in the L2 norm of a part's values), "max_update_norm" (0: none;
// each peer scales its contribution down to this L2 norm before sending).
//
// Where training starts (read by the peer, not here): "model" (a folder,
// Hub name org/name[@revision] or single .safetensors file) and
// "model_config" (a single file's configs), used when a peer is given no
// --model_dir.
// What is trained (every peer must train the same values): "lora_rank" (0:
// the full UNet; else LoRA adapters of this rank, which alone are averaged),
// "lora_alpha" (0: the rank), "lora_targets" (["attention"]; also
// "feed_forward", "projections", "convolutions", "text_encoder";
// trainer/model/lora.h).
// Pure: no gRPC or libtorch types.
#ifndef TRAINER_COLLAB_SYNC_CONFIG_H_
#define TRAINER_COLLAB_SYNC_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/averaging/codec.h"
#include "trainer/averaging/span_reducer.h"

namespace dd::collab {

enum class SyncMode { kGradients, kOuter };

struct OuterOptions {
  int64_t local_steps = 32;  // H
  // Peers of different speeds: a peer whose round has not opened after H
  // local steps goes on training, up to this many, instead of idling; the
  // coordinator opens the outer step when the collaboration has gathered
  // its target of samples, so fast peers fill in for slow ones, and each
  // contribution is weighted by the samples in it. 0: 2 × H. Equal to H:
  // every peer stops at H and waits (runs whose step counts must be exact).
  int64_t max_local_steps = 0;
  double lr = 0.7;
  double momentum = 0.9;
  bool nesterov = true;
  bool error_feedback = true;
  bool overlap = true;
};

struct LoraSetting {
  int rank = 0;  // 0: no LoRA
  double alpha = 0;
  std::vector<std::string> targets;  // empty: the trainer's default
};

struct SyncConfig {
  SyncMode mode = SyncMode::kGradients;
  averaging::CodecId codec = averaging::CodecId::kNone;
  OuterOptions outer;
  bool open_run = false;
  averaging::Aggregation aggregation = averaging::Aggregation::kMean;
  double clip_tau = 1.0;
  double max_update_norm = 0;  // 0: contributions are sent as they are
  LoraSetting lora;
};

// Reads the sync keys of a run config (a JSON object's text). A key that is
// present with a wrong type or an out-of-range value is InvalidArgument
// naming the key (never silently replaced by its default): local_steps >= 1,
// outer_lr > 0, outer_momentum in [0, 1); and CheckSyncConfig.
absl::StatusOr<SyncConfig> ParseSyncConfig(const std::string& run_config_json);

// InvalidArgument for settings that do not go together: the sparse codec
// (topk8bit) only with outer steps and error feedback.
absl::Status CheckSyncConfig(const SyncConfig& config);

const char* SyncModeName(SyncMode mode);

// OuterOptions::max_local_steps with its default resolved.
int64_t MaxLocalSteps(const OuterOptions& options);

}  // namespace dd::collab

#endif  // TRAINER_COLLAB_SYNC_CONFIG_H_
