// VAE training mode: fits a model folder's AutoencoderKL to a dataset
// (reconstruction MSE + a small KL term, AdamW), measures the scaling factor
// that gives its latents unit variance (as SD's 0.18215 was chosen: 1 / std
// of sampled latents), then writes the folder again with the trained VAE and
// that factor in its config (the other parts hard-linked). A model made by
// init_model has a random VAE, whose latents carry no picture; training it
// first is what lets the UNet trained after it draw recognisable images.
#ifndef TRAINER_TRAINING_VAE_TRAINER_H_
#define TRAINER_TRAINING_VAE_TRAINER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace dd::training {

struct VaeTrainOptions {
  std::string model_dir;
  std::string dataset_dir;
  std::string output_dir;  // written as a complete model folder
  int batch_size = 8;
  int resolution = 64;
  int64_t max_steps = 500;
  double lr = 1e-3;
  double kl_weight = 1e-6;
  uint64_t seed = 0;
  int num_workers = 2;
  // Batches encoded to measure the scaling factor (0: keep the config's).
  int calibration_batches = 8;
};

struct VaeTrainResult {
  double first_loss = 0;  // mean reconstruction MSE of the first 10 steps
  double last_loss = 0;   // ... and of the last 10
  std::string reconstructions_png;  // inputs (top row) and reconstructions
  double latent_std = 0;             // of sampled latents, before scaling
  double scaling_factor = 0;         // as written to the config
};

// max_steps == 0 only measures the scaling factor and writes the folder.
absl::StatusOr<VaeTrainResult> TrainVae(const VaeTrainOptions& options);

}  // namespace dd::training

#endif  // TRAINER_TRAINING_VAE_TRAINER_H_
