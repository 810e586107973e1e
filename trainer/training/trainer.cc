#include "trainer/training/trainer.h"

#include <ATen/core/grad_mode.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>

#include <glog/logging.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"
#include "common/crypto/sha256.h"
#include "common/image/image_codec.h"
#include "common/io/file_util.h"
#include "common/status/status_macros.h"
#include "trainer/data/sample_source.h"
#include "trainer/diffusion/schedulers.h"
#include "trainer/model/diffusers_model.h"
#include "trainer/model/lora.h"
#include "trainer/model/torch_compat.h"
#include "trainer/model/torch_tensors.h"
#include "trainer/pipeline/txt2img.h"
#include "trainer/training/diffusion_loss.h"
#include "trainer/training/ema.h"
#include "trainer/training/gradients.h"
#include "trainer/training/loss_scaler.h"
#include "trainer/training/step_metrics.h"
#include "trainer/training/lr_schedule.h"
#include "trainer/training/optimizer.h"

namespace dd::training {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr char kStateFormat[] = "distdiff-training-state-1";

}  // namespace

namespace {

absl::Status CheckOptions(const TrainerOptions& o) {
  if (o.model_dir.empty() || o.output_dir.empty()) {
    return absl::InvalidArgumentError("--model_dir and --output_dir are required");
  }
  if (o.batch_size < 1 || o.gradient_accumulation_steps < 1 || o.max_steps < 1 ||
      o.resolution < 8 || o.save_steps < 0 || o.image_log_steps < 0 || o.keep_checkpoints < 1 ||
      o.num_workers < 1) {
    return absl::InvalidArgumentError(
        "batch_size, gradient_accumulation_steps, max_steps, keep_checkpoints and num_workers "
        "must be >= 1, resolution >= 8, save_steps and image_log_steps >= 0");
  }
  if (!(o.lr > 0) || !std::isfinite(o.lr)) return absl::InvalidArgumentError("--lr must be positive");
  if (o.mixed_precision != "no" && o.mixed_precision != "fp16" && o.mixed_precision != "bf16") {
    return absl::InvalidArgumentError(
        absl::StrCat("--mixed_precision must be no, fp16 or bf16, not \"", o.mixed_precision, "\""));
  }
  ASSIGN_OR_RETURN(at::Device device, ResolveDevice(o.device));
  if (o.mixed_precision == "fp16" && !device.is_cuda()) {
    // fp16 autocast is a CUDA feature (and libtorch 1.13's CPU autocast is
    // bf16 only).
    return absl::FailedPreconditionError(
        "--mixed_precision=fp16 needs a CUDA GPU (--device=cuda); use bf16 (or no) on the CPU");
  }
  if (o.use_ema && !(o.ema_decay > 0 && o.ema_decay < 1)) {
    return absl::InvalidArgumentError("--ema_decay must be in (0, 1)");
  }
  return absl::OkStatus();
}

absl::Status CheckWritable(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("output directory ", dir, " cannot be created: ", ec.message()));
  }
  std::string probe = dir + "/.write_test";
  if (absl::Status s = WriteFileAtomically(probe, "ok"); !s.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("output directory ", dir, " is not writable: ", s.message()));
  }
  fs::remove(probe, ec);
  return absl::OkStatus();
}

}  // namespace

uint64_t SampleSeed(uint64_t seed, uint64_t step, const std::string& key, int occurrence) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a of the key
  for (unsigned char c : key) h = (h ^ c) * 1099511628211ull;
  auto mix = [](uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  return mix(mix(mix(seed + 0x9E3779B97F4A7C15ull) ^ step) ^ h) ^ static_cast<uint64_t>(occurrence);
}

struct Trainer::State {
  TrainerOptions o;
  std::string source_dir;  // where the frozen parts come from
  std::unique_ptr<model::DiffusersModel> model;
  std::unique_ptr<diffusion::NoiseSchedule> schedule;
  std::optional<LrSchedule> lr;
  std::vector<NamedTensor> params;
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<Ema> ema;
  LossScaler scaler;
  at::Device device{at::kCPU};
  bool loss_scaling = false;  // fp16, or forced
  data::DataPosition position;  // after the last batch trained
  int64_t epoch = 0;
  int64_t step = 0;
  // The gradients being accumulated toward the next step.
  int64_t accumulated_samples = 0;
  int64_t accumulated_batches = 0;
  double loss_sum = 0;
  Clock::time_point accumulation_start;
  std::map<std::string, int> occurrences;  // of each sample key this step
  int64_t skipped = 0;
  int64_t samples_seen = 0;
  // Outputs.
  std::unique_ptr<StepRecorder> recorder;  // metrics.jsonl and TensorBoard
  std::unique_ptr<SampleWriter> sample_writer;
  std::unique_ptr<CheckpointWriter> checkpoint_writer;
  std::function<void(std::vector<at::Tensor>&)> hook;
  bool lora_text_encoders = false;  // LoRA adapters on the text encoder(s) are trained

  // Conditioning of a batch of captions: hidden states, and for SDXL the
  // pooled embeddings and time ids.
  absl::Status Encode(const data::Batch& batch, LossInputs* in) {
    // Frozen encoders record no graph.
    std::optional<at::NoGradGuard> no_grad;
    if (!o.train_text_encoder && !lora_text_encoders) no_grad.emplace();
    auto ids = [this](const model::ClipTokenizer& tok, const std::vector<std::string>& captions) {
      std::vector<int64_t> flat;
      for (const auto& c : captions) {
        std::vector<int> v = tok.EncodePadded(c);
        flat.insert(flat.end(), v.begin(), v.end());
      }
      return at::tensor(flat, at::kLong).reshape({static_cast<int64_t>(captions.size()), -1}).to(device);
    };
    ASSIGN_OR_RETURN(auto one, model->text_encoder->Forward(ids(*model->tokenizer, batch.captions)));
    if (!model->unet->config().text_time) {
      in->encoder_hidden_states = one.last_hidden_state;
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(auto two, model->text_encoder_2->Forward(ids(*model->tokenizer_2, batch.captions)));
    in->encoder_hidden_states = at::cat({one.hidden_states[one.hidden_states.size() - 2],
                                         two.hidden_states[two.hidden_states.size() - 2]}, -1);
    in->added_text_embeds = two.text_embeds.defined() ? two.text_embeds : two.pooled;
    const int64_t b = batch.pixels.size(0);
    at::Tensor target = at::tensor({batch.pixels.size(2), batch.pixels.size(3)}, at::kLong)
                            .unsqueeze(0).expand({b, 2});
    in->added_time_ids = at::cat({batch.original_sizes, batch.crop_top_left, target}, 1).to(device, at::kFloat);
    return absl::OkStatus();
  }

  double LossScale() const { return loss_scaling ? scaler.scale() : 1.0; }

  // The mean diffusion loss of a batch (a graph for backward when grad is
  // enabled), with each sample's random draws seeded by (seed, draw_step,
  // key, how often `seen` has counted the key).
  absl::StatusOr<at::Tensor> BatchLoss(const data::Batch& batch, uint64_t draw_step,
                                       std::map<std::string, int>* seen);

  // The mean per-sample gradient of `param` accumulated so far, unscaled,
  // float32, on the parameter's device (zeros when it got none).
  at::Tensor MeanGradient(const at::Tensor& param) const {
    const at::Tensor& g = param.grad();
    if (!g.defined()) return at::zeros_like(param, param.options().dtype(at::kFloat));
    return g.to(at::kFloat) * (1.0 / (static_cast<double>(accumulated_samples) * LossScale()));
  }

  // The layout of the flat vectors exchanged with a collaboration (a
  // gradient, the weights): every trained parameter in order, float32.
  //
  // They cross between the host and the parameters' device in groups of
  // about kTransferGroup values, one copy per group (on a GPU each copy
  // from or to pageable memory waits for the device: one per tensor would
  // be ~700 stalls per step for SD's UNet; one for the whole vector would
  // need a second model-sized buffer on the device).
  static constexpr int64_t kTransferGroup = int64_t{1} << 26;  // 256 MB of float32

  // Calls fn(first, end, offset, count) for consecutive parameters
  // [first, end) holding `count` values from `offset` of the flat layout.
  void ForEachGroup(const std::function<void(size_t, size_t, int64_t, int64_t)>& fn) const {
    size_t first = 0;
    int64_t offset = 0, count = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      count += params[i].value.numel();
      if (count >= kTransferGroup || i + 1 == params.size()) {
        fn(first, i + 1, offset, count);
        first = i + 1;
        offset += count;
        count = 0;
      }
    }
  }

  // Writes of(param) for every parameter into `flat` (num_elements()
  // values).
  void Flatten(const std::function<at::Tensor(const at::Tensor&)>& of, float* flat) const {
    ForEachGroup([&](size_t first, size_t end, int64_t offset, int64_t count) {
      at::Tensor dst = at::from_blob(flat + offset, {count}, at::kFloat);
      std::vector<at::Tensor> parts;
      for (size_t i = first; i < end; ++i) {
        parts.push_back(of(params[i].value).reshape({-1}).to(at::kFloat));
      }
      if (parts.front().is_cpu()) {  // no transfer to save: one pass, no staging copy
        int64_t pos = 0;
        for (const at::Tensor& part : parts) {
          dst.narrow(0, pos, part.numel()).copy_(part);
          pos += part.numel();
        }
        return;
      }
      dst.copy_(parts.size() == 1 ? parts[0] : at::cat(parts));
    });
  }

  // `flat` (num_elements() values) on the parameters' device, as one tensor
  // per parameter shaped like it: views into a copy of each group, or, on
  // the CPU when the caller only reads them (`writable` false), views of
  // `flat` itself (no model-sized copy).
  std::vector<at::Tensor> Upload(const float* flat, bool writable) const {
    std::vector<at::Tensor> views(params.size());
    ForEachGroup([&](size_t first, size_t end, int64_t offset, int64_t count) {
      at::Tensor group = at::from_blob(const_cast<float*>(flat) + offset, {count}, at::kFloat);
      const at::Device device = params[first].value.device();
      if (writable || !device.is_cpu()) {
        group = group.to(device, at::kFloat, /*non_blocking=*/false, /*copy=*/true);
      }
      int64_t pos = 0;
      for (size_t i = first; i < end; ++i) {
        const int64_t n = params[i].value.numel();
        views[i] = group.narrow(0, pos, n).view(params[i].value.sizes());
        pos += n;
      }
    });
    return views;
  }

  // Sets the parameters to `flat` (or adds it to them), in parameter order.
  absl::Status ChangeParameters(const std::vector<float>& flat, bool add) {
    int64_t n = 0;
    for (const auto& p : params) n += p.value.numel();
    if (flat.size() != static_cast<size_t>(n)) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter vector has ", flat.size(), " values, the model ", n));
    }
    try {
      at::NoGradGuard no_grad;
      std::vector<at::Tensor> values = Upload(flat.data(), /*writable=*/false);
      for (size_t i = 0; i < values.size(); ++i) {
        at::Tensor value = params[i].value.detach();
        if (add) {
          value.add_(values[i]);
        } else {
          value.copy_(values[i]);
        }
      }
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat(add ? "adding to" : "writing", " parameters: ",
                                              e.what_without_backtrace()));
    }
    return absl::OkStatus();
  }

  // Swaps the EMA weights into the model (and back on the second call).
  void SwapEma() {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) {
      at::Tensor tmp = params[i].value.detach().clone();
      params[i].value.detach().copy_(ema->shadow()[i]);
      const_cast<at::Tensor&>(ema->shadow()[i]).copy_(tmp);
    }
  }

  absl::Status RestoreFrom(const std::string& checkpoint) {
    const std::string path = checkpoint + "/" + kTrainingStateFile;
    std::map<std::string, std::string> meta;
    ASSIGN_OR_RETURN(auto tensors, model::LoadTensors(path, &meta));
    return Restore(path, tensors, meta);
  }

  // The tensors and metadata of a training state (file or download).
  std::map<std::string, at::Tensor> StateTensors() const {
    std::map<std::string, at::Tensor> state;
    for (const auto& p : params) state["param." + p.name] = p.value.detach();
    for (auto& [k, v] : optimizer->ExportState()) state["opt." + k] = v;
    if (ema) {
      for (auto& [k, v] : ema->ExportState(params)) state[k] = v;
    }
    return state;
  }
  std::map<std::string, std::string> StateMetadata() const {
    return {{"format", kStateFormat},
            {"step", absl::StrCat(step)},
            {"skipped_steps", absl::StrCat(skipped)},
            {"samples_seen", absl::StrCat(samples_seen)},
            {"loss_scale", absl::StrCat(scaler.scale())},
            {"loss_scale_clean_steps", absl::StrCat(scaler.clean_steps())},
            {"data_position", position.Serialize()},
            {"optimizer", o.use_8bit_adam ? "adamw8bit" : "adamw"}};
  }

  absl::Status Restore(const std::string& path, std::map<std::string, at::Tensor>& tensors,
                       std::map<std::string, std::string>& meta) {
    if (meta["format"] != kStateFormat) {
      return absl::FailedPreconditionError(absl::StrCat(path, " is not a training state of this version"));
    }
    // Everything is checked before anything changes.
    std::vector<at::Tensor> values;
    for (NamedTensor& p : params) {
      auto it = tensors.find("param." + p.name);
      if (it == tensors.end() || it->second.sizes() != p.value.sizes()) {
        return absl::FailedPreconditionError(absl::StrCat(path, ": parameter ", p.name,
                                                          " missing or of another shape"));
      }
      values.push_back(it->second);
    }
    int64_t new_step = 0, new_skipped = 0, new_seen = 0, clean = 0;
    double scale = 0;
    if (!absl::SimpleAtoi(meta["step"], &new_step) || !absl::SimpleAtoi(meta["skipped_steps"], &new_skipped) ||
        !absl::SimpleAtoi(meta["samples_seen"], &new_seen) ||
        !absl::SimpleAtod(meta["loss_scale"], &scale) ||
        !absl::SimpleAtoi(meta["loss_scale_clean_steps"], &clean)) {
      return absl::FailedPreconditionError(path + ": malformed step counters or loss scale");
    }
    // A state may come from another peer: counters and scale must be sane,
    // and no floating-point tensor may hold NaN or infinity (one poisoned
    // moment would spread to every later step).
    if (new_step < 0 || new_skipped < 0 || new_skipped > new_step || new_seen < 0 || clean < 0 ||
        !std::isfinite(scale) || scale <= 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, ": implausible counters (step ", new_step, ", skipped ", new_skipped,
          ", samples ", new_seen, ") or loss scale ", scale));
    }
    ASSIGN_OR_RETURN(data::DataPosition new_position, data::DataPosition::Parse(meta["data_position"]));
    std::map<std::string, at::Tensor> opt, ema_state;
    for (auto& [k, v] : tensors) {
      bool finite = true;
      try {
        finite = !at::isFloatingType(v.scalar_type()) || at::isfinite(v).all().item<bool>();
      } catch (const c10::Error& e) {
        return absl::InternalError(absl::StrCat(path, ": checking tensor ", k, ": ", e.what()));
      }
      if (!finite) {
        return absl::FailedPreconditionError(
            absl::StrCat(path, ": tensor ", k, " holds NaN or infinite values"));
      }
      if (absl::StartsWith(k, "opt.")) opt[k.substr(4)] = v;
      if (absl::StartsWith(k, "ema.")) ema_state[k] = v;
    }
    // The optimizer and EMA imports validate before they assign.
    RETURN_IF_ERROR(optimizer->ImportState(opt));
    if (ema) RETURN_IF_ERROR(ema->ImportState(params, ema_state));
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) params[i].value.detach().copy_(values[i]);
    step = new_step;
    skipped = new_skipped;
    samples_seen = new_seen;
    scaler.Restore(scale, clean);
    position = new_position;
    return absl::OkStatus();
  }
};

Trainer::Trainer(std::unique_ptr<State> state) : s_(std::move(state)) {}
Trainer::~Trainer() = default;

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const TrainerOptions& options) {
  RETURN_IF_ERROR(CheckOptions(options));
  RETURN_IF_ERROR(CheckWritable(options.output_dir));
  auto s = std::make_unique<State>();
  s->o = options;
  const TrainerOptions& o = s->o;
  std::string checkpoint;
  if (!o.resume_from.empty()) {
    auto resolved = ResolveCheckpoint(o.output_dir, o.resume_from);
    if (!resolved.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("--resume_from: ", resolved.status().message()));
    }
    checkpoint = *resolved;
  }
  // A checkpoint is itself a complete model folder.
  s->source_dir = checkpoint.empty() ? o.model_dir : checkpoint;
  auto model = model::DiffusersModel::Load(s->source_dir);
  if (!model.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("model folder ", s->source_dir, " cannot be used: ", model.status().message()));
  }
  s->model = std::move(*model);
  if (!s->model->unet || !s->model->vae || !s->model->text_encoder || !s->model->tokenizer) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model folder ", s->source_dir, " lacks one of unet, vae, text_encoder, tokenizer"));
  }
  auto schedule = diffusion::ParseScheduleConfig(s->model->scheduler_config_json,
                                                 s->source_dir + "/scheduler/scheduler_config.json");
  if (!schedule.ok()) return absl::FailedPreconditionError(std::string(schedule.status().message()));
  s->schedule = std::make_unique<diffusion::NoiseSchedule>(*schedule);

  LrScheduleOptions lro;
  lro.name = o.lr_scheduler;
  lro.warmup_steps = o.lr_warmup_steps;
  lro.total_steps = o.max_steps;
  ASSIGN_OR_RETURN(LrSchedule lr, LrSchedule::Make(o.lr, lro));
  s->lr = lr;

  ASSIGN_OR_RETURN(s->device, ResolveDevice(o.device));
  s->loss_scaling = o.mixed_precision == "fp16" || o.force_loss_scaling;
  if (!s->device.is_cpu()) {
    // set_data moves each weight in place: every holder of the tensor (the
    // layers, the parameter lists) sees it on the device.
    try {
      auto move = [&](const auto& params) {
        for (const auto& p : params) p.value.set_data(p.value.to(s->device));
      };
      move(s->model->unet->parameters());
      move(s->model->vae->parameters());
      move(s->model->text_encoder->parameters());
      if (s->model->text_encoder_2) move(s->model->text_encoder_2->parameters());
    } catch (const c10::Error& e) {
      return absl::FailedPreconditionError(
          absl::StrCat("moving the model to ", o.device, ": ", e.what_without_backtrace()));
    }
    LOG(INFO) << "training on " << s->device.str();
  }
  // Process-wide settings of libtorch (one trainer per process).
  at::globalContext().setBenchmarkCuDNN(o.cudnn_benchmark && !o.deterministic);
  if (o.deterministic) {
    at::globalContext().setDeterministicCuDNN(true);
    at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/false);
  }
  s->model->unet->SetGradientCheckpointing(o.gradient_checkpointing);
  if (o.lora.rank > 0) {
    // Only the adapters learn; the base weights record no gradient.
    if (o.train_text_encoder || o.use_ema) {
      return absl::InvalidArgumentError(
          "LoRA trains UNet adapters only: --train_text_encoder and --use_ema do not go with it yet");
    }
    RETURN_IF_ERROR(model::CheckLoraOptions(o.lora));
    // The UNet's groups on the UNet, "text_encoder" on the encoder(s).
    model::LoraOptions unet_lora = o.lora, text_lora = o.lora;
    unet_lora.targets.clear();
    text_lora.targets = {"text_encoder"};
    for (const std::string& t : o.lora.targets) {
      if (t == "text_encoder") {
        s->lora_text_encoders = true;
      } else {
        unet_lora.targets.push_back(t);
      }
    }
    unet_lora.seed = text_lora.seed = o.seed;
    int64_t n = 0, layers = 0;
    auto add = [&](const std::string& prefix, std::vector<model::ModelParameter> adapters) {
      for (const auto& p : adapters) {
        p.value.requires_grad_(true);
        s->params.push_back({prefix + p.name, p.value});
        n += p.value.numel();
      }
      layers += adapters.size() / 2;
    };
    if (!unet_lora.targets.empty()) {
      ASSIGN_OR_RETURN(auto adapters, model::AttachLora(s->model->unet->lora_slots(), unet_lora));
      add("", std::move(adapters));
    }
    if (s->lora_text_encoders) {
      // Named apart from the UNet's in the training state, as full
      // text-encoder training names them.
      for (const auto& [part, encoder] : {std::pair{"text_encoder", s->model->text_encoder.get()},
                                          std::pair{"text_encoder_2", s->model->text_encoder_2.get()}}) {
        if (encoder == nullptr) continue;
        ASSIGN_OR_RETURN(auto adapters, model::AttachLora(encoder->lora_slots(), text_lora));
        add(absl::StrCat(part, "."), std::move(adapters));
      }
    }
    LOG(INFO) << "LoRA rank " << o.lora.rank << " on " << layers << " layers ("
              << absl::StrJoin(o.lora.targets, ", ") << "): " << n << " trained values";
  } else {
    for (const auto& p : s->model->unet->parameters()) {
      p.value.requires_grad_(true);
      s->params.push_back({p.name, p.value});
    }
  }
  if (o.train_text_encoder) {
    // Named apart from the UNet's in the training state.
    for (const auto& [part, encoder] : {std::pair{"text_encoder", s->model->text_encoder.get()},
                                        std::pair{"text_encoder_2", s->model->text_encoder_2.get()}}) {
      if (encoder == nullptr) continue;
      for (const auto& p : encoder->parameters()) {
        p.value.requires_grad_(true);
        s->params.push_back({absl::StrCat(part, ".", p.name), p.value});
      }
    }
  }
  AdamWOptions ao{o.adam_beta1, o.adam_beta2, o.adam_epsilon, o.adam_weight_decay};
  if (o.use_8bit_adam) {
    ASSIGN_OR_RETURN(s->optimizer, MakeAdamW8bit(s->params, ao));
  } else {
    ASSIGN_OR_RETURN(s->optimizer, MakeAdamW(s->params, ao));
  }
  if (o.use_ema) s->ema = std::make_unique<Ema>(s->params, o.ema_decay);
  if (!checkpoint.empty()) {
    RETURN_IF_ERROR(s->RestoreFrom(checkpoint));
    LOG(INFO) << "resumed from " << checkpoint << " at step " << s->step;
  }

  ASSIGN_OR_RETURN(s->recorder, StepRecorder::Open(o.output_dir + "/metrics.jsonl",
                                                   o.output_dir + "/logs", "train/"));
  if (o.metrics != nullptr) s->recorder->AddSink(MakeStepMetricsSink(o.metrics));
  SampleWriterOptions so;
  so.output_dir = o.output_dir;
  so.prompts = o.sample_prompts;
  so.steps = o.sample_steps;
  so.guidance = o.sample_guidance;
  so.resolution = o.resolution;
  s->sample_writer = std::make_unique<SampleWriter>(std::move(so), s->recorder.get());
  s->checkpoint_writer = std::make_unique<CheckpointWriter>(o.output_dir, o.keep_checkpoints);
  return std::unique_ptr<Trainer>(new Trainer(std::move(s)));
}

int64_t Trainer::step() const { return s_->step; }
int64_t Trainer::skipped_steps() const { return s_->skipped; }
double Trainer::loss_scale() const { return s_->LossScale(); }

std::vector<std::pair<std::string, at::Tensor>> Trainer::ParametersForTest() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : s_->params) out.push_back({p.name, p.value.detach()});
  return out;
}

void Trainer::SetGradientHookForTest(std::function<void(std::vector<at::Tensor>&)> hook) {
  s_->hook = std::move(hook);
}

absl::StatusOr<at::Tensor> Trainer::State::BatchLoss(const data::Batch& batch, uint64_t draw_step,
                                                     std::map<std::string, int>* seen) {
  const bool autocast = o.mixed_precision != "no";
  const bool cuda = device.is_cuda();
  const at::ScalarType autocast_dtype = o.mixed_precision == "fp16" ? at::kHalf : at::kBFloat16;
  LossInputs in;
  const int64_t b = batch.pixels.size(0);
  model::LatentDistribution dist;
  {
    at::NoGradGuard no_grad;
    ASSIGN_OR_RETURN(dist, model->vae->Encode(batch.pixels.to(device)));
  }
  // Every random number of a sample (latent sample, noise, timestep) comes
  // from a generator seeded by (seed, step, sample key), so a sample gets
  // the same ones whichever peer trains it in whichever batch: N peers at
  // batch B compute the same gradient as one peer at batch N*B. The draws
  // are made on the CPU (the same numbers on every device) and go to the
  // device; the encoder's statistics stay there (bringing them to the host
  // would wait for the encoder on a GPU, every micro-batch).
  std::vector<at::Tensor> eps, noise, timesteps;
  const std::vector<int64_t> sample_shape(dist.mean.sizes().begin() + 1, dist.mean.sizes().end());
  const int64_t c = sample_shape[0];
  for (int64_t i = 0; i < b; ++i) {
    const std::string& key = i < static_cast<int64_t>(batch.keys.size()) ? batch.keys[i] : "";
    const int occurrence = (*seen)[key]++;
    at::Generator gen =
        at::make_generator<at::CPUGeneratorImpl>(SampleSeed(o.seed, draw_step, key, occurrence));
    eps.push_back(at::randn(sample_shape, gen));
    at::Tensor n = at::randn(sample_shape, gen);
    if (o.noise_offset > 0) n = n + o.noise_offset * at::randn({c, 1, 1}, gen);
    noise.push_back(n);
    timesteps.push_back(at::randint(schedule->config().num_train_timesteps, {1}, gen, at::kLong));
  }
  in.latents = (dist.mean + dist.std * at::stack(eps).to(device)) * model->vae->scaling_factor();
  in.noise = at::stack(noise).to(device);
  in.timesteps = at::cat(timesteps).to(device);
  RETURN_IF_ERROR(Encode(batch, &in));
  model::SetAutocast(cuda, autocast, autocast_dtype);
  auto loss = DiffusionLoss(*model->unet, *schedule, in, LossOptions{o.snr_gamma});
  model::SetAutocast(cuda, false, autocast_dtype);
  return loss;
}

absl::StatusOr<double> Trainer::AccumulateBatch(const data::Batch& batch) {
  State& s = *s_;
  if (s.accumulated_samples == 0) s.accumulation_start = Clock::now();
  try {
    ASSIGN_OR_RETURN(at::Tensor loss, s.BatchLoss(batch, static_cast<uint64_t>(s.step), &s.occurrences));
    const int64_t b = batch.pixels.size(0);
    // Per-sample sums: divided by the sample count (and the loss scale) when
    // the step is applied.
    (loss * (static_cast<double>(b) * s.LossScale())).backward();
    const double value = loss.item<double>();
    s.loss_sum += value;
    ++s.accumulated_batches;
    s.accumulated_samples += b;
    s.position = batch.position;
    s.epoch = batch.epoch;
    return value;
  } catch (const c10::Error& e) {
    model::SetAutocast(s.device.is_cuda(), false, at::kBFloat16);
    return absl::InternalError(absl::StrCat("training step: ", e.what_without_backtrace()));
  }
}

absl::StatusOr<double> Trainer::EvalLoss(const data::Batch& batch) const {
  State& s = *s_;
  try {
    at::NoGradGuard no_grad;
    std::map<std::string, int> seen;  // draws depend on the key only: fixed across the run
    ASSIGN_OR_RETURN(at::Tensor loss, s.BatchLoss(batch, /*draw_step=*/0, &seen));
    return loss.item<double>();
  } catch (const c10::Error& e) {
    model::SetAutocast(s.device.is_cuda(), false, at::kBFloat16);
    return absl::InternalError(absl::StrCat("evaluation: ", e.what_without_backtrace()));
  }
}

int64_t Trainer::accumulated_samples() const { return s_->accumulated_samples; }

std::vector<std::string> Trainer::AccumulatedKeys() const {
  std::vector<std::string> keys;
  for (const auto& [key, count] : s_->occurrences) keys.insert(keys.end(), count, key);
  return keys;
}

int64_t Trainer::num_elements() const {
  int64_t n = 0;
  for (const auto& p : s_->params) n += p.value.numel();
  return n;
}

absl::StatusOr<std::vector<float>> Trainer::AccumulatedGradient() const {
  const State& s = *s_;
  if (s.accumulated_samples == 0) return absl::FailedPreconditionError("no gradients accumulated");
  std::vector<float> flat(num_elements());
  at::NoGradGuard no_grad;
  s.Flatten([&s](const at::Tensor& p) { return s.MeanGradient(p); }, flat.data());
  return flat;
}

void Trainer::DropAccumulated() {
  State& s = *s_;
  for (auto& p : s.params) p.value.mutable_grad() = at::Tensor();
  s.accumulated_samples = 0;
  s.accumulated_batches = 0;
  s.loss_sum = 0;
  s.occurrences.clear();
}

absl::StatusOr<StepReport> Trainer::ApplyUpdate(const std::vector<float>* gradient,
                                               bool local_finite) {
  State& s = *s_;
  const TrainerOptions& o = s.o;
  StepReport r;
  if (s.accumulated_samples == 0 && gradient == nullptr) {
    return absl::FailedPreconditionError("no gradients accumulated");
  }
  try {
    std::vector<at::Tensor> grads;
    if (gradient == nullptr) {
      // The local mean gradient, straight from the accumulated per-sample
      // sums (no round trip through a flat copy).
      at::NoGradGuard no_grad;
      for (auto& p : s.params) grads.push_back(s.MeanGradient(p.value));
    } else {
      if (gradient->size() != static_cast<size_t>(num_elements())) {
        return absl::InvalidArgumentError(absl::StrCat("gradient has ", gradient->size(),
                                                       " values, the model ", num_elements()));
      }
      at::NoGradGuard no_grad;
      grads = s.Upload(gradient->data(), /*writable=*/true);  // clipping scales them
    }
    if (s.hook) s.hook(grads);
    r.lr = s.lr->At(s.step);
    r.grad_norm = ClipGradNorm(grads, o.max_grad_norm);
    r.skipped = !std::isfinite(r.grad_norm);
    if (s.loss_scaling) {
      // The scale follows this peer's own gradients: an overflow halves it,
      // a run of clean steps doubles it.
      s.scaler.Update(gradient == nullptr ? r.skipped : !local_finite);
    }
    if (!r.skipped) {
      RETURN_IF_ERROR(s.optimizer->Step(grads, r.lr));
      if (s.ema) s.ema->Update(s.params);
    } else {
      ++s.skipped;
      LOG(WARNING) << "step " << s.step + 1 << ": non-finite gradients, update skipped";
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("optimizer step: ", e.what_without_backtrace()));
  }
  r.loss = s.accumulated_batches > 0 ? s.loss_sum / s.accumulated_batches : NAN;
  r.samples = s.accumulated_samples;
  r.seconds = s.accumulated_samples > 0
                  ? std::chrono::duration<double>(Clock::now() - s.accumulation_start).count()
                  : 0;
  s.samples_seen += r.samples;
  DropAccumulated();
  r.step = ++s.step;
  return r;
}

std::string Trainer::ParameterHash() const {
  Sha256 hash;
  for (const auto& p : s_->params) {
    at::Tensor v = p.value.detach().contiguous().cpu();
    hash.Update(absl::string_view(static_cast<const char*>(v.data_ptr()), v.nbytes()));
  }
  return DigestToHex(hash.Finish());
}

void Trainer::SetStep(int64_t step) { s_->step = step; }

absl::Status Trainer::ReadParameters(std::vector<float>* out) const {
  out->resize(num_elements());
  try {
    s_->Flatten([](const at::Tensor& p) { return p.detach(); }, out->data());
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("reading parameters: ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

absl::Status Trainer::WriteParameters(const std::vector<float>& values) {
  return s_->ChangeParameters(values, /*add=*/false);
}

absl::Status Trainer::AddToParameters(const std::vector<float>& delta) {
  return s_->ChangeParameters(delta, /*add=*/true);
}

absl::StatusOr<std::string> Trainer::ExportState(const StateExtras& extra) const {
  std::map<std::string, at::Tensor> tensors = s_->StateTensors();
  std::map<std::string, std::string> meta = s_->StateMetadata();
  for (const auto& [name, t] : extra.tensors) {
    if (absl::StartsWith(name, "param.") || absl::StartsWith(name, "opt.") ||
        absl::StartsWith(name, "ema.") || tensors.count(name) > 0) {
      return absl::InvalidArgumentError(absl::StrCat("extra state tensor ", name, " collides"));
    }
    tensors[name] = t;
  }
  for (const auto& [k, v] : extra.metadata) {
    if (meta.count(k) > 0) return absl::InvalidArgumentError(absl::StrCat("extra metadata ", k, " collides"));
    meta[k] = v;
  }
  return model::SerializeTensors(tensors, meta);
}

absl::Status Trainer::ImportState(const std::string& bytes, StateExtras* extra) {
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> meta;
  RETURN_IF_ERROR(model::ParseTensors(bytes, &tensors, &meta));
  RETURN_IF_ERROR(s_->Restore("downloaded state", tensors, meta));
  DropAccumulated();
  if (extra != nullptr) {
    const std::map<std::string, std::string> own = s_->StateMetadata();
    for (auto& [name, t] : tensors) {
      if (!absl::StartsWith(name, "param.") && !absl::StartsWith(name, "opt.") &&
          !absl::StartsWith(name, "ema.")) {
        extra->tensors[name] = t;
      }
    }
    for (auto& [k, v] : meta) {
      if (own.count(k) == 0) extra->metadata[k] = v;
    }
  }
  return absl::OkStatus();
}

const TrainerOptions& Trainer::options() const { return s_->o; }

absl::StatusOr<std::string> Trainer::SaveCheckpoint() {
  State& s = *s_;
  // The frozen parts and the index are linked from the source folder; the
  // trained parts and the training state are written.
  const bool lora = s.o.lora.rank > 0;
  auto link = [&](const std::string& name) {
    if (name == kLoraFile || name == kKohyaLoraFile) return false;
    if ((name == "unet" && !lora) || name == "unet_ema" || absl::StartsWith(name, "checkpoint-")) {
      return false;
    }
    if (s.o.train_text_encoder && absl::StartsWith(name, "text_encoder")) return false;
    return name == "model_index.json" || fs::is_directory(fs::path(s.source_dir) / name);
  };
  auto write = [&](const std::string& dir) -> absl::Status {
    if (lora) {
      // The base UNet is linked; the adapters are the checkpoint.
      const auto modules = model::LoraModules(s.model->unet.get(), s.model->text_encoder.get(),
                                              s.model->text_encoder_2.get());
      RETURN_IF_ERROR(model::SaveLora(dir + "/" + kLoraFile, modules, model::LoraFormat::kPeft, s.o.lora.alpha));
      RETURN_IF_ERROR(model::SaveLora(dir + "/" + kKohyaLoraFile, modules, model::LoraFormat::kKohya,
                                      s.o.lora.alpha));
      return model::SaveTensors(dir + "/" + kTrainingStateFile, s.StateTensors(), s.StateMetadata());
    }
    RETURN_IF_ERROR(s.model->unet->Save(dir + "/unet"));
    if (s.o.train_text_encoder) {
      RETURN_IF_ERROR(s.model->text_encoder->Save(dir + "/text_encoder"));
      if (s.model->text_encoder_2) {
        RETURN_IF_ERROR(s.model->text_encoder_2->Save(dir + "/text_encoder_2"));
      }
    }
    if (s.ema) {
      s.SwapEma();
      absl::Status saved = s.model->unet->Save(dir + "/unet_ema");
      s.SwapEma();
      RETURN_IF_ERROR(saved);
    }
    return model::SaveTensors(dir + "/" + kTrainingStateFile, s.StateTensors(), s.StateMetadata());
  };
  return s.checkpoint_writer->Write(s.step, s.source_dir, link, write);
}

absl::StatusOr<std::string> Trainer::WriteSamples() {
  State& s = *s_;
  if (!s.sample_writer->has_prompts()) return absl::FailedPreconditionError("no sample prompts");
  // Samples show the EMA weights when there are any (what a user would ship).
  if (s.ema) s.SwapEma();
  absl::StatusOr<std::string> path = s.sample_writer->Write(s.model.get(), s.step);
  if (s.ema) s.SwapEma();
  return path;
}

data::LoaderOptions LoaderOptionsFor(const TrainerOptions& o) {
  data::LoaderOptions lo;
  lo.batch_size = o.batch_size;
  lo.buckets.resolution = o.resolution;
  lo.buckets.square_only = !o.bucketing;
  lo.buckets.step = std::min(64, o.resolution);
  lo.random_crop = o.random_crop;
  lo.random_flip = o.random_flip;
  lo.captions.dropout = o.caption_dropout;
  lo.captions.shuffle_tags = o.shuffle_tags;
  lo.captions.keep_tags = o.keep_tags;
  lo.seed = o.seed;
  lo.num_workers = o.num_workers;
  return lo;
}

absl::Status Trainer::RecordMetrics(const StepReport& r, const std::map<std::string, double>& extra) {
  State& s = *s_;
  std::map<std::string, double> row = {{"step", double(r.step)},
                                       {"loss", r.loss},
                                       {"lr", r.lr},
                                       {"grad_norm", r.grad_norm},
                                       {"samples", double(r.samples)},
                                       {"samples_seen", double(s.samples_seen)},
                                       {"epoch", double(s.epoch)},
                                       {"skipped_steps", double(s.skipped)}};
  for (const auto& [k, v] : extra) row[k] = v;
  return s.recorder->Record(r.step, row);
}

absl::Status Trainer::FlushRecords() { return s_->recorder->Flush(); }

const data::DataPosition& Trainer::data_position() const { return s_->position; }

}  // namespace dd::training
