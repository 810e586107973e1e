// Models from the Hugging Face Hub: `org/name[@revision]` as a model
// reference, downloaded with libcurl into huggingface_hub's cache layout
//   $HF_HUB_CACHE (or $HF_HOME/hub, or ~/.cache/huggingface/hub)
//     models--org--name/blobs/<etag>            the files' bytes
//                       snapshots/<commit>/<path> links to ../../blobs/<etag>
//                       refs/<revision>          the commit a branch or tag names
// so a user's existing cache is reused and what we fetch is reused by
// Python tools. Only what a diffusers pipeline needs is fetched:
// model_index.json and, for each part it lists, configs, tokenizer files and
// the weights (safetensors when the part has them, else .bin). Large (LFS)
// files are checked against the SHA-256 the Hub states; an interrupted
// download resumes from the `.incomplete` file; a progress line shows bytes,
// rate and ETA. HF_ENDPOINT, HF_TOKEN / the token file and HF_HUB_OFFLINE
// are honoured (offline: the cache only).
#ifndef TRAINER_MODEL_HUB_DOWNLOAD_H_
#define TRAINER_MODEL_HUB_DOWNLOAD_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dd::model {

struct HubOptions {
  std::string endpoint = "https://huggingface.co";
  std::string cache_dir;  // the "hub" folder
  std::string token;      // empty: anonymous
  bool offline = false;
  int attempts = 4;       // per file, resuming each time
  // A weights variant ("fp16": name.fp16.safetensors) fetched instead of the
  // plain weights where a part has it (half the download); empty: plain.
  std::string variant;
  absl::Duration timeout = absl::Minutes(30);  // per request
};

// The options the environment gives: HF_ENDPOINT, HF_HUB_CACHE / HF_HOME,
// HF_HUB_OFFLINE, and the token from `token_file` when given, else HF_TOKEN,
// else $HF_HOME/token (huggingface-cli login's file). NotFound / Internal
// for a token file that cannot be read.
absl::StatusOr<HubOptions> HubOptionsFromEnvironment(const std::string& token_file = "");

struct ModelRef {
  std::string repo;  // "org/name"
  std::string revision = "main";
};

// "org/name" or "org/name@revision" as a Hub reference; nullopt for
// anything else (a path: absolute, relative with ./, or existing on disk).
std::optional<ModelRef> ParseModelRef(const std::string& text);

// Fetches what a diffusers pipeline of `ref` needs into the cache and
// returns its snapshot folder. Unauthenticated (401: a token is needed or
// wrong), PermissionDenied (a gated repository whose conditions the token's
// user has not accepted), NotFound (unknown repository, revision or, offline,
// nothing cached), DataLoss (a file whose size or SHA-256 differs from what
// the Hub states; nothing of it is kept), Unavailable (the Hub could not be
// reached after the attempts).
absl::StatusOr<std::string> DownloadPipeline(const ModelRef& ref, const HubOptions& options);

// `model` as a local folder: a Hub reference is downloaded
// (DownloadPipeline with the environment's options and `token_file`); a
// path is returned as it is.
absl::StatusOr<std::string> ResolveModelDir(const std::string& model, const std::string& token_file = "",
                                            const std::string& variant = "");

}  // namespace dd::model

#endif  // TRAINER_MODEL_HUB_DOWNLOAD_H_
