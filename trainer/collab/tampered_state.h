// Security tests only: the training states a dishonest donor serves. A real
// trainer process acts as one with --serve_tampered_state_for_test, and the
// session tests' fake collaboration does the same in process, so both
// attack with the same states.
#ifndef TRAINER_COLLAB_TAMPERED_STATE_H_
#define TRAINER_COLLAB_TAMPERED_STATE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dd::collab {

enum class StateTamper {
  kNone,
  kWeights,   // one weight moved: finite, well-formed, a matching SHA-256
  kNan,       // one weight NaN
  kOversize,  // padded past what a state of this model can be
};

// "" (none), "weights", "nan" or "oversize"; InvalidArgument otherwise.
absl::StatusOr<StateTamper> ParseStateTamper(absl::string_view name);

// `bytes` (a state as Trainer::ExportState writes it) changed as `tamper`
// says; `max_bytes` is the most a state of the model can take. Fails when
// the state does not parse or holds no float32 parameter.
absl::StatusOr<std::string> TamperedState(StateTamper tamper, std::string bytes,
                                          uint64_t max_bytes);

}  // namespace dd::collab

#endif  // TRAINER_COLLAB_TAMPERED_STATE_H_
