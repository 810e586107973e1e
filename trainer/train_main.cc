// train: fine-tunes a Stable Diffusion model on a folder of captioned images
// (or WebDataset shards), on one peer.
//
//   bazel run //trainer:train -- --model_dir=D --dataset_dir=DATA --output_dir=O
//       --batch_size=4 --resolution=512 --lr=1e-5 --max_steps=10000
//
// Collaborative mode (a peer of a run; data comes from the chunks the
// coordinator leases, the step from the collaboration):
//
//   bazel run //trainer:train -- --coordinator=HOST:PORT --listen=0.0.0.0:7000
//       --public_address=my.host:7000 --model_dir=D --output_dir=O
//       --auth_token_file=token [--tls_ca=ca.pem]
//
// Flags follow diffusers' train_text_to_image.py where a counterpart exists.
#include <gflags/gflags.h>

#include <iostream>

#include "absl/strings/str_split.h"
#include "common/init/init.h"
#include "common/metrics/gpu_memory.h"
#include "trainer/model/model_source.h"
#include "common/metrics/http_server.h"
#include "common/metrics/prometheus.h"
#include "common/status/status_macros.h"
#include "common/rpc/security.h"
#include "trainer/collab/peer.h"
#include "trainer/training/local_run.h"
#include "trainer/training/vae_trainer.h"

DEFINE_string(model_dir, "", "Diffusers model folder to fine-tune, a single-file .safetensors (with --model_config), or a Hugging Face Hub name "
                             "org/name[@revision] (downloaded into the Hub cache; HF_ENDPOINT, "
                             "HF_HOME, HF_HUB_OFFLINE apply).");
DEFINE_string(model_config, "", "With a single-file --model_dir (a .safetensors in the original "
                                "layout): a diffusers folder or Hub name of its family for configs, "
                                "tokenizers and scheduler.");
DEFINE_string(hf_token_file, "", "The Hub token for private or gated models (default: HF_TOKEN, "
                                 "then $HF_HOME/token).");
DEFINE_string(hf_variant, "", "A Hub model's weights variant to fetch instead of the plain "
                              "weights (e.g. fp16: half the download).");
DEFINE_string(dataset_dir, "", "Folder of image + .txt pairs and/or .tar shards, or one .tar.");
DEFINE_string(output_dir, "", "Where checkpoints, samples and logs go.");
DEFINE_int32(batch_size, 1, "Images per micro-batch (train_batch_size).");
DEFINE_int32(resolution, 512, "Training resolution (bucket area resolution^2).");
DEFINE_bool(bucketing, true, "Aspect-ratio buckets; false: square resize and crop.");
DEFINE_bool(random_crop, false, "Random instead of centred crops.");
DEFINE_bool(random_flip, false, "Mirror half of the images.");
DEFINE_double(caption_dropout, 0.0, "Probability of an empty caption (the prototype's ucg).");
DEFINE_bool(shuffle_tags, false, "Shuffle comma-separated caption tags.");
DEFINE_int32(keep_tags, 0, "Leading tags kept in place when shuffling.");
DEFINE_int32(dataloader_num_workers, 2, "Image decoding threads.");
DEFINE_double(lr, 1e-4, "Learning rate (learning_rate).");
DEFINE_string(lr_scheduler, "constant",
              "constant, constant_with_warmup, linear, cosine or polynomial.");
DEFINE_int64(lr_warmup_steps, 0, "Warm-up steps of the learning rate.");
DEFINE_int64(max_steps, 1000, "Optimizer steps to train (max_train_steps).");
DEFINE_int32(gradient_accumulation_steps, 1, "Micro-batches per optimizer step.");
DEFINE_double(max_grad_norm, 1.0, "Gradient clipping norm (0: off).");
DEFINE_bool(use_8bit_adam, false, "8-bit AdamW (blockwise-quantized moments).");
DEFINE_double(adam_beta1, 0.9, "AdamW beta1.");
DEFINE_double(adam_beta2, 0.999, "AdamW beta2.");
DEFINE_double(adam_epsilon, 1e-8, "AdamW epsilon.");
DEFINE_double(adam_weight_decay, 1e-2, "AdamW decoupled weight decay.");
DEFINE_string(mixed_precision, "no", "no, fp16 (CUDA only) or bf16.");
DEFINE_string(device, "cpu", "cpu, cuda, cuda:N, or auto (a GPU when libtorch has CUDA and sees one).");
DEFINE_bool(gradient_checkpointing, false, "Recompute UNet layers in backward: less memory, ~1 more forward.");
DEFINE_bool(cudnn_benchmark, true,
            "Let cuDNN time its convolution algorithms per shape and keep the fastest (GPU).");
DEFINE_bool(deterministic, false,
            "Deterministic algorithms only, no cuDNN benchmarking (debugging one peer's numerics, "
            "exact resumption on a GPU; set CUBLAS_WORKSPACE_CONFIG=:4096:8 for cuBLAS).");
DEFINE_bool(train_text_encoder, false,
            "Also train the text encoder (same optimizer and learning rate); checkpoints then "
            "carry the trained text_encoder/.");
DEFINE_double(noise_offset, 0.0, "Offset noise scale.");
DEFINE_double(snr_gamma, 0.0, "Min-SNR weighting gamma (0: off; 5 is usual).");
DEFINE_bool(use_ema, false, "Keep an EMA of the weights (sampled and saved as unet_ema).");
DEFINE_int32(lora_rank, 0, "Train LoRA adapters of this rank on the UNet instead of its weights "
                           "(0: full fine-tuning). In a collaboration the run configuration's "
                           "\"lora_rank\" decides.");
DEFINE_double(lora_alpha, 0, "LoRA alpha: the adapters' scale is alpha / rank (0: alpha = rank).");
DEFINE_string(lora_targets, "attention",
              "Layers that get adapters, comma-separated: attention (to_q/k/v/out), feed_forward, "
              "projections, convolutions (the resnets' and samplers'), text_encoder (its q/k/v/out).");
DEFINE_double(ema_decay, 0.9999, "EMA decay.");
DEFINE_uint64(seed, 0, "Seed of data order, noise and timesteps.");
DEFINE_int64(save_steps, 500, "Checkpoint every N steps (checkpointing_steps).");
DEFINE_int32(checkpoints_total_limit, 3, "Checkpoints to keep.");
DEFINE_int64(image_log_steps, 0, "Sample grid every N steps (0: off).");
DEFINE_string(sample_prompts, "", "Prompts for the grids, separated by '|' (default: dataset captions; required with --image_log_steps in a collaboration).");
DEFINE_int32(sample_steps, 20, "Denoising steps of the sample grids.");
DEFINE_double(sample_guidance, 7.5, "Guidance scale of the sample grids.");
DEFINE_string(resume_from, "", "\"latest\" or a checkpoint folder (resume_from_checkpoint).");
DEFINE_bool(train_vae, false, "Train the model folder's VAE instead (reconstruction + KL); writes "
                             "--output_dir as a complete model folder with the trained VAE.");
DEFINE_double(vae_kl_weight, 1e-6, "VAE training: weight of the KL term.");
DEFINE_int32(vae_calibration_batches, 8,
             "VAE training: batches encoded afterwards to set scaling_factor to 1/std of the "
             "latents (0 keeps the config's). --max_steps=0 only measures it.");
DEFINE_string(coordinator, "", "host:port of a run's coordinator: train as a peer of that run.");
DEFINE_string(listen, "127.0.0.1:0", "Peer mode: address of this peer's averaging service.");
DEFINE_string(public_address, "", "Peer mode: address others dial (NAT, port forwarding).");
DEFINE_bool(client_only, false, "Peer mode: not reachable; averages without reducing a span.");
DEFINE_string(peer_name, "", "Peer mode: name shown by ddctl peers.");
DEFINE_int64(max_local_samples_per_step, 0,
             "Peer mode: stop accumulating at this many samples and wait for the round (0: no cap).");
DEFINE_int32(linger_after_run_s, 120,
             "Peer mode: after the last step, serve the final state this many seconds at most "
             "while other live peers are behind it (one left out of the last round catches up "
             "from it); 0: stop at once.");
DEFINE_double(bandwidth_mbps, 0,
              "Peer mode: this peer's upload capacity in Mbit/s (hivemind's --bandwidth); the "
              "coordinator gives it a span to reduce in proportion, within 4x of the median "
              "of the members' (0: the median).");
DEFINE_int64(nan_contribution_at_step_for_test, 0,
             "Peer mode, fault tests only: poison this peer's contribution to this global step.");
DEFINE_double(scale_reduced_means_for_test, 0,
              "Peer mode, security tests only: act as a dishonest reducer that answers every "
              "part of its span with the mean times this factor (0: honest).");
DEFINE_double(poison_contributions_for_test, 0,
              "Peer mode, security tests only: act as a poisoned sender that sends every "
              "contribution times this factor with weight 1e300 (0: honest).");
DEFINE_string(serve_tampered_state_for_test, "",
              "Peer mode, security tests only: act as a dishonest donor whose served states "
              "are tampered with: weights (one weight moved), nan or oversize (empty: honest).");
DEFINE_string(trained_keys_log, "", "Peer mode: append \"STEP KEY\" for every sample this peer "
              "contributed to each global step (audits, equivalence tests).");
DEFINE_string(averaging_codec, "", "Peer mode: none, fp16, bf16, uniform8bit, blockwise8bit "
                                   "(default: the run config's \"codec\").");

namespace {

absl::Status Run(int, char**) {
  dd::training::TrainerOptions o;
  ASSIGN_OR_RETURN(o.model_dir, dd::model::ResolveModel({FLAGS_model_dir, FLAGS_model_config,
                                                          FLAGS_hf_token_file, FLAGS_hf_variant}));
  o.dataset_dir = FLAGS_dataset_dir;
  o.output_dir = FLAGS_output_dir;
  o.batch_size = FLAGS_batch_size;
  o.resolution = FLAGS_resolution;
  o.bucketing = FLAGS_bucketing;
  o.random_crop = FLAGS_random_crop;
  o.random_flip = FLAGS_random_flip;
  o.caption_dropout = FLAGS_caption_dropout;
  o.shuffle_tags = FLAGS_shuffle_tags;
  o.keep_tags = FLAGS_keep_tags;
  o.num_workers = FLAGS_dataloader_num_workers;
  o.lr = FLAGS_lr;
  o.lr_scheduler = FLAGS_lr_scheduler;
  o.lr_warmup_steps = FLAGS_lr_warmup_steps;
  o.max_steps = FLAGS_max_steps;
  o.gradient_accumulation_steps = FLAGS_gradient_accumulation_steps;
  o.max_grad_norm = FLAGS_max_grad_norm;
  o.use_8bit_adam = FLAGS_use_8bit_adam;
  o.adam_beta1 = FLAGS_adam_beta1;
  o.adam_beta2 = FLAGS_adam_beta2;
  o.adam_epsilon = FLAGS_adam_epsilon;
  o.adam_weight_decay = FLAGS_adam_weight_decay;
  o.mixed_precision = FLAGS_mixed_precision;
  o.device = FLAGS_device;
  o.noise_offset = FLAGS_noise_offset;
  o.snr_gamma = FLAGS_snr_gamma;
  o.gradient_checkpointing = FLAGS_gradient_checkpointing;
  o.cudnn_benchmark = FLAGS_cudnn_benchmark;
  o.deterministic = FLAGS_deterministic;
  o.train_text_encoder = FLAGS_train_text_encoder;
  o.use_ema = FLAGS_use_ema;
  o.lora.rank = FLAGS_lora_rank;
  o.lora.alpha = FLAGS_lora_alpha;
  o.lora.targets = absl::StrSplit(FLAGS_lora_targets, ',', absl::SkipEmpty());
  o.ema_decay = FLAGS_ema_decay;
  o.seed = FLAGS_seed;
  o.save_steps = FLAGS_save_steps;
  o.keep_checkpoints = FLAGS_checkpoints_total_limit;
  o.image_log_steps = FLAGS_image_log_steps;
  if (!FLAGS_sample_prompts.empty()) o.sample_prompts = absl::StrSplit(FLAGS_sample_prompts, '|');
  o.sample_steps = FLAGS_sample_steps;
  o.sample_guidance = FLAGS_sample_guidance;
  o.resume_from = FLAGS_resume_from;
  if (FLAGS_train_vae) {
    dd::training::VaeTrainOptions vo;
    vo.model_dir = o.model_dir;
    vo.dataset_dir = FLAGS_dataset_dir;
    vo.output_dir = FLAGS_output_dir;
    vo.batch_size = FLAGS_batch_size;
    vo.resolution = FLAGS_resolution;
    vo.max_steps = FLAGS_max_steps;
    vo.lr = FLAGS_lr;
    vo.kl_weight = FLAGS_vae_kl_weight;
    vo.calibration_batches = FLAGS_vae_calibration_batches;
    vo.seed = FLAGS_seed;
    vo.num_workers = FLAGS_dataloader_num_workers;
    ASSIGN_OR_RETURN(auto r, dd::training::TrainVae(vo));
    if (vo.max_steps > 0) {
      std::cout << "VAE reconstruction MSE " << r.first_loss << " -> " << r.last_loss
                << "; inputs above reconstructions: " << r.reconstructions_png << "\n";
    }
    std::cout << "latent std " << r.latent_std << ", scaling_factor " << r.scaling_factor
              << "; model folder with the trained VAE: " << vo.output_dir << "\n";
    return absl::OkStatus();
  }
  // Prometheus metrics with --http_port (on loopback unless --http_host).
  dd::metrics::MetricsRegistry registry;
  dd::metrics::AddProcessMetrics(&registry);
  // GPU memory where an NVIDIA driver is present.
  if (dd::metrics::AddGpuMemoryMetrics(&registry)) LOG(INFO) << "GPU memory metrics from NVML";
  o.metrics = &registry;
  ASSIGN_OR_RETURN(auto http, dd::metrics::StartHttpServerFromFlags("127.0.0.1", &registry));
  if (!FLAGS_coordinator.empty()) {
    dd::collab::PeerOptions po;
    po.trainer = o;
    po.hf_token_file = FLAGS_hf_token_file;
    po.hf_variant = FLAGS_hf_variant;
    po.coordinator = FLAGS_coordinator;
    po.listen = FLAGS_listen;
    po.public_address = FLAGS_public_address;
    po.client_only = FLAGS_client_only;
    po.trained_keys_log = FLAGS_trained_keys_log;
    po.name = FLAGS_peer_name;
    po.max_local_samples_per_step = FLAGS_max_local_samples_per_step;
    if (!(FLAGS_bandwidth_mbps >= 0 && FLAGS_bandwidth_mbps <= 1e6)) {
      return absl::InvalidArgumentError("--bandwidth_mbps must be in [0, 1e6]");
    }
    po.bandwidth_mbps = FLAGS_bandwidth_mbps;
    if (FLAGS_linger_after_run_s < 0 || FLAGS_linger_after_run_s > 86400) {
      return absl::InvalidArgumentError("--linger_after_run_s must be in [0, 86400]");
    }
    po.linger_after_run = absl::Seconds(FLAGS_linger_after_run_s);
    po.codec = FLAGS_averaging_codec;
    po.nan_contribution_at_step_for_test = FLAGS_nan_contribution_at_step_for_test;
    po.scale_reduced_means_for_test = FLAGS_scale_reduced_means_for_test;
    po.poison_contributions_for_test = FLAGS_poison_contributions_for_test;
    po.serve_tampered_state_for_test = FLAGS_serve_tampered_state_for_test;
    ASSIGN_OR_RETURN(po.security, dd::SecurityConfigFromFlags());
    RETURN_IF_ERROR(dd::collab::RunPeer(po));
    std::cout << "collaborative training finished; outputs in " << o.output_dir << "\n";
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(auto run, dd::training::LocalRun::Create(o));
  RETURN_IF_ERROR(run->Run());
  std::cout << "trained to step " << run->step() << "; checkpoints, samples/ and logs/ are in "
            << o.output_dir << " (tensorboard --logdir " << o.output_dir << "/logs)\n";
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  return dd::RunMain("train --model_dir=D --dataset_dir=DATA --output_dir=O [flags]", argc, argv, Run);
}
