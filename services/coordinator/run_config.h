// The run's configuration file: JSON with at least a `run_id`; everything
// else (model reference, hyperparameters, target batch size, codec) is passed
// through unchanged to every peer that joins.
//
//   {"run_id": "shapes-1", "model": "tiny", "target_batch_size": 64,
//    "hyperparameters": {"lr": 1e-4}}
//
// The coordinator itself reads "target_batch_size", "open_run" and
// "reducer_audits" (RunConfig below).
#ifndef SERVICES_COORDINATOR_RUN_CONFIG_H_
#define SERVICES_COORDINATOR_RUN_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"

namespace dd::coordinator {

struct RunConfig {
  std::string run_id;
  std::string json;  // the whole document, re-serialized compactly
  // Samples per global step (the collaboration's batch); default 256.
  uint64_t target_batch_size = 256;
  // Audits of each reducer's span per round, each by a different member
  // ("reducer_audits", 0-8); default 1 in open runs ("open_run": true),
  // else 0.
  uint32_t reducer_audits = 0;
};

// InvalidArgument naming `source` and the problem (JSON syntax with line and
// column, not an object, missing or malformed run_id: 1-64 characters of
// letters, digits, '.', '_', '-').
absl::StatusOr<RunConfig> ParseRunConfig(const std::string& text, const std::string& source);

// Reads and parses a file (NotFound / PermissionDenied name the path).
absl::StatusOr<RunConfig> LoadRunConfig(const std::string& path);

}  // namespace dd::coordinator

#endif  // SERVICES_COORDINATOR_RUN_CONFIG_H_
