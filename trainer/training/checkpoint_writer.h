// CheckpointWriter: writes a run's checkpoint-<step> folders so that one
// either exists complete or not at all, and keeps only the newest few. What
// goes into a checkpoint is the caller's (the UNet trainer writes a
// diffusers model folder and its training state); this class owns the
// folder's life: frozen parts linked from the source folder, the rest
// written by the caller into a temporary folder, the rename that publishes
// it, and the pruning of old ones.
//
// A checkpoint counts only when it holds the training state file
// (kTrainingStateFile): a folder left by a crash mid-write is never resumed
// from.
#ifndef TRAINER_TRAINING_CHECKPOINT_WRITER_H_
#define TRAINER_TRAINING_CHECKPOINT_WRITER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace dd::training {

inline constexpr char kTrainingStateFile[] = "training_state.safetensors";

class CheckpointWriter {
 public:
  // Checkpoints go to `output_dir`; at most `keep` stay (keep >= 1).
  CheckpointWriter(std::string output_dir, int keep);

  // Writes <output_dir>/checkpoint-<step>: the top-level entries of
  // `source_dir` that `link` accepts are hard-linked (or copied), then
  // `write` adds the rest into the folder it is given. The folder is built
  // as checkpoint-<step>.tmp and renamed when `write` succeeded; a
  // checkpoint of the same step is replaced. Then the oldest complete
  // checkpoints beyond `keep` are removed. Returns the folder's path.
  // Errors: `write`'s, or PermissionDenied/Internal naming the path.
  absl::StatusOr<std::string> Write(int64_t step, const std::string& source_dir,
                                    const std::function<bool(const std::string& name)>& link,
                                    const std::function<absl::Status(const std::string& dir)>& write);

  const std::string& output_dir() const { return output_dir_; }

 private:
  // Fixed after construction.
  const std::string output_dir_;
  const int keep_;
};

// The complete checkpoints in `output_dir` (step, path), oldest first.
std::vector<std::pair<int64_t, std::string>> ListCheckpoints(const std::string& output_dir);

// The checkpoint folder `resume_from` names: "latest" is the newest
// complete checkpoint-N in `output_dir`; anything else is a folder that
// must hold kTrainingStateFile. NotFound when there is none.
absl::StatusOr<std::string> ResolveCheckpoint(const std::string& output_dir,
                                              const std::string& resume_from);

}  // namespace dd::training

#endif  // TRAINER_TRAINING_CHECKPOINT_WRITER_H_
