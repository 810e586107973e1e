// HashVote: finds the peer whose weights diverged. After every global step
// each member of a collaboration holds the same shared weights (the same
// bytes: every member applies the same averaged update), so the hashes they
// report for a step must agree; a peer whose hash differs from the one most
// peers hold (a bit flip, a bug, a different libtorch rounding) is told so
// and downloads the state of a peer holding the common hash, instead of
// training on from weights nobody else has.
//
// A peer is diverged for step k when at least two peers reported another
// hash for k and they outnumber the peers that reported its hash: with two
// peers that disagree nobody can tell which is right, so nobody is told.
// Peers report at different moments, so every vote re-judges all the votes
// of its step: a peer outvoted after it reported learns of it on its next
// report, whatever step that one names, until it reports the common hash of
// a step at least as new (after downloading a member's state). Bounded: the
// votes of the newest `steps_kept` steps. Pure logic; thread-safe.
#ifndef SERVICES_COORDINATOR_ROUNDS_HASH_VOTE_H_
#define SERVICES_COORDINATOR_ROUNDS_HASH_VOTE_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace dd::coordinator {

class HashVote {
 public:
  struct Verdict {
    bool diverged = false;
    std::string consensus;  // the hash most peers reported for the step
  };

  explicit HashVote(size_t steps_kept = 16) : steps_kept_(steps_kept) {}

  // Records that `peer` holds `hash` after `step` (a peer's later report for
  // the same step replaces its earlier one), re-judges the step's votes and
  // says whether `peer` stands outvoted (at this step or an earlier one).
  // Steps older than the newest `steps_kept` are not judged.
  Verdict Record(const std::string& peer, uint64_t step, const std::string& hash);

  // Forgets a peer's votes (it left, or downloaded another state).
  void Forget(const std::string& peer);

  // The hashes peers reported for `step` (empty when none, or no longer
  // kept), by peer.
  std::map<std::string, std::string> VotesFor(uint64_t step);

 private:
  // Fixed after construction.
  const size_t steps_kept_;

  absl::Mutex mu_;
  // step -> peer -> hash.
  std::map<uint64_t, std::map<std::string, std::string>> votes_ ABSL_GUARDED_BY(mu_);
  // peer -> (step it was outvoted at, the common hash of that step).
  std::map<std::string, std::pair<uint64_t, std::string>> outvoted_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dd::coordinator

#endif  // SERVICES_COORDINATOR_ROUNDS_HASH_VOTE_H_
