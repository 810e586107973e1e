// Trainer: the training step of a Stable Diffusion UNet, the way diffusers'
// train_text_to_image does it: frozen VAE and text encoder, uniform
// timesteps, epsilon or v targets, MSE (optionally min-SNR weighted), AdamW
// or 8-bit AdamW, a learning-rate schedule, gradient accumulation and
// clipping, optional EMA, and dynamic loss scaling under fp16. It takes its
// batches from its caller (LocalRun: a dataset folder; a collaboration's
// peer: leased chunks) and exports and imports its state and its flat
// gradient and weights for averaging. Its outputs go through
// CheckpointWriter, SampleWriter and StepRecorder.
//
// Everything a run needs to continue exactly is checkpointed: fp32 weights,
// optimizer moments, EMA, loss scale, step, the random generator and the
// data loader's position. On CPU a resumed run is bit-identical to one that
// never stopped.
//
// Output folder:
//   checkpoint-<step>/           a diffusers model folder (frozen parts
//                                hard-linked from --model_dir) + training_state.safetensors
//   samples/step-<step>.png      sample grids
//   logs/events.out.tfevents.*   TensorBoard: loss, lr, grad norm, throughput, grids
//   metrics.jsonl                one line per step
#ifndef TRAINER_TRAINING_TRAINER_H_
#define TRAINER_TRAINING_TRAINER_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/metrics/prometheus.h"
#include "trainer/data/data_loader.h"
#include "trainer/model/device.h"
#include "trainer/model/lora.h"
#include "trainer/training/checkpoint_writer.h"
#include "trainer/training/sample_writer.h"
#include "trainer/training/step_recorder.h"
#include "trainer/training/step_report.h"

namespace dd::training {

struct TrainerOptions {
  // When set, every metrics row also feeds these Prometheus metrics
  // (step_metrics.h; not owned, must outlive the Trainer).
  metrics::MetricsRegistry* metrics = nullptr;

  std::string model_dir;
  std::string dataset_dir;  // LocalRun's; the Trainer takes its batches from its caller
  std::string output_dir;

  // Data.
  int batch_size = 1;
  int resolution = 512;
  bool bucketing = true;  // false: square resize and crop
  bool random_crop = false;
  bool random_flip = false;
  double caption_dropout = 0.0;
  bool shuffle_tags = false;
  int keep_tags = 0;
  int num_workers = 2;

  // Optimisation.
  double lr = 1e-4;
  std::string lr_scheduler = "constant";
  int64_t lr_warmup_steps = 0;
  int64_t max_steps = 1000;
  int gradient_accumulation_steps = 1;
  double max_grad_norm = 1.0;
  bool use_8bit_adam = false;
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_epsilon = 1e-8, adam_weight_decay = 1e-2;
  std::string mixed_precision = "no";  // no, fp16 (CUDA), bf16
  // Where the model trains: "cpu", "cuda", "cuda:N", or "auto" (the first
  // GPU when this libtorch has CUDA and sees one, else the CPU).
  std::string device = "cpu";
  // Dynamic loss scaling (GradScaler's rules). On with fp16; may be forced
  // on for fp32/bf16 (a power-of-two scale changes nothing there, which the
  // tests use to check the scaling path on the CPU).
  bool force_loss_scaling = false;
  double noise_offset = 0.0;
  double snr_gamma = 0.0;
  bool gradient_checkpointing = false;  // recompute UNet layers in backward
  // cuDNN times its convolution algorithms per shape and keeps the fastest
  // (torch.backends.cudnn.benchmark). Changes a peer's own gradient in its
  // last bits at most, never the weights members share.
  bool cudnn_benchmark = true;
  // Deterministic algorithms only (and no cuDNN benchmarking): for
  // debugging one peer's numerics; an op without a deterministic kernel
  // then fails with libtorch's message.
  bool deterministic = false;
  // Also train the text encoder(s) (same optimizer and LR as the UNet); its
  // weights are averaged with the UNet's in collaborative training and
  // written to each checkpoint's text_encoder/.
  bool train_text_encoder = false;
  bool use_ema = false;
  double ema_decay = 0.9999;
  uint64_t seed = 0;
  // LoRA (rank > 0): only adapters on the UNet's targeted layers are
  // trained (and averaged in a collaboration); the base weights stay as
  // loaded. Checkpoints hold the adapters (kLoraFile, diffusers/PEFT keys,
  // and kKohyaLoraFile, kohya/A1111 keys) beside links to the base model.
  model::LoraOptions lora;

  // Output.
  int64_t save_steps = 500;
  int keep_checkpoints = 3;
  int64_t image_log_steps = 0;  // 0: no sample grids
  std::vector<std::string> sample_prompts;  // empty: captions from the dataset
  int sample_steps = 20;
  double sample_guidance = 7.5;
  std::string resume_from;  // "", "latest", or a checkpoint folder
};

using model::kKohyaLoraFile;
using model::kLoraFile;

// The data loader settings these options ask for.
data::LoaderOptions LoaderOptionsFor(const TrainerOptions& options);

// The device a name asks for (trainer/model/device.h).
using model::ResolveDevice;

class Trainer {
 public:
  // Loads the model and the dataset and prepares the output folder; with
  // resume_from, restores the checkpoint. Fails at once with a message that
  // names the problem: FailedPrecondition for a bad model folder, an empty
  // dataset or an unwritable output folder; InvalidArgument for bad options.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const TrainerOptions& options);
  ~Trainer();

  // A step is AccumulateBatch for each micro-batch, then ApplyUpdate: with
  // the local gradient (LocalRun), or with a collaboration's average.
  // Forward and backward of one batch; gradients add up until ApplyUpdate
  // or DropAccumulated. Returns the batch's mean loss.
  absl::StatusOr<double> AccumulateBatch(const data::Batch& batch);
  int64_t accumulated_samples() const;
  // The batch's mean loss at the current weights, without gradients, with
  // each sample's noise, timestep and latent sample fixed by (seed, key)
  // alone: the same numbers at every step, so a held-out set gives a loss
  // curve free of sampling noise.
  absl::StatusOr<double> EvalLoss(const data::Batch& batch) const;
  // The keys of the samples accumulated since the last update, sorted (a
  // key trained twice appears twice).
  std::vector<std::string> AccumulatedKeys() const;
  // The mean per-sample gradient of what was accumulated, flattened in
  // parameter order (float32). FailedPrecondition when nothing was.
  // With loss scaling, the gradient is unscaled.
  absl::StatusOr<std::vector<float>> AccumulatedGradient() const;
  // One optimizer step with `gradient` (flattened, as AccumulatedGradient),
  // or the local accumulated gradient when null; clears the accumulation and
  // advances the step. InvalidArgument for a gradient of the wrong length.
  // `local_finite` says whether this peer's own AccumulatedGradient was
  // finite (the caller checked it before averaging); with loss scaling an
  // overflow there lowers the scale. Unused for the local gradient, which
  // is checked here.
  absl::StatusOr<StepReport> ApplyUpdate(const std::vector<float>* gradient,
                                         bool local_finite = true);
  // Forgets the accumulated gradients (a round this peer missed).
  void DropAccumulated();
  // Total number of trained values.
  int64_t num_elements() const;
  // Hex SHA-256 of every trained parameter's bytes, in order: peers that
  // applied the same updates have the same hash.
  std::string ParameterHash() const;
  // The collaboration's global step (learning-rate schedule position).
  void SetStep(int64_t step);

  // The trained parameters flattened in parameter order (float32), as
  // AccumulatedGradient lays out a gradient: read into `out` (resized to
  // num_elements()), and written back from `values`. InvalidArgument for a
  // vector of the wrong length.
  absl::Status ReadParameters(std::vector<float>* out) const;
  absl::Status WriteParameters(const std::vector<float>& values);
  // Adds `delta` (laid out the same way) to the parameters, on their device.
  absl::Status AddToParameters(const std::vector<float>& delta);

  // The training state (what a checkpoint's training_state.safetensors
  // holds) as bytes, and restoring from them (a peer joining late). The
  // import fails without changing anything when the bytes do not match
  // this model and optimizer. `extra` tensors (names must not start with
  // "param.", "opt." or "ema.") and metadata travel with the state, e.g. a
  // collaboration's outer-step state; the import hands them back.
  struct StateExtras {
    std::map<std::string, at::Tensor> tensors;
    std::map<std::string, std::string> metadata;
  };
  absl::StatusOr<std::string> ExportState(const StateExtras& extra = {}) const;
  absl::Status ImportState(const std::string& bytes, StateExtras* extra = nullptr);

  // Appends a step's numbers (and `extra` ones) to metrics.jsonl and the
  // TensorBoard file under "train/".
  absl::Status RecordMetrics(const StepReport& report, const std::map<std::string, double>& extra);
  // Writes what RecordMetrics and WriteSamples buffered to disk.
  absl::Status FlushRecords();

  // Where in its data the training stands: the position after the last
  // batch trained (restored from a checkpoint), for a loader to resume at.
  const data::DataPosition& data_position() const;

  const TrainerOptions& options() const;

  // Writes checkpoint-<step> now (CheckpointWriter: a diffusers folder,
  // frozen parts linked, and the training state) and prunes old ones.
  absl::StatusOr<std::string> SaveCheckpoint();

  // Writes the sample grid of the current weights (the EMA weights when
  // there are any) through SampleWriter; returns its path.
  absl::StatusOr<std::string> WriteSamples();

  int64_t step() const;
  int64_t skipped_steps() const;
  // The dynamic loss scale (1 without loss scaling).
  double loss_scale() const;

  // The trained parameters (UNet, float32) by name, for tests.
  std::vector<std::pair<std::string, at::Tensor>> ParametersForTest() const;

  // Test hook: called on the gradients after backward, before the update
  // (e.g. to poison them with NaN).
  void SetGradientHookForTest(std::function<void(std::vector<at::Tensor>&)> hook);

  struct State;

 private:
  explicit Trainer(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

// The seed of a sample's random numbers (latent sample, noise, timestep) at
// `step`; `occurrence` counts earlier uses of the same key in the step.
uint64_t SampleSeed(uint64_t seed, uint64_t step, const std::string& key, int occurrence);

}  // namespace dd::training

#endif  // TRAINER_TRAINING_TRAINER_H_
