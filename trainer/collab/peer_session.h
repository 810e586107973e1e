// PeerSession: one trainer peer's part in a collaborative run, as a state
// machine over small interfaces (peer_links.h), so every transition is
// unit-tested with in-memory fakes (peer_session_test.cc) and the trainer
// wires in the real parts (peer.cc).
//
//   kJoining ──(behind the collaboration)──▶ kResynchronising
//      │                                          │
//      ▼                                          ▼
//   kAccumulating ◀───────────────────────────────┘
//      │ train a batch, report the samples; the report answers with the
//      │ round once one includes this peer
//      ├──(cap reached, no round yet)──▶ kWaitingForRound (polls, re-reports)
//      ▼                                          │
//   kAveraging ◀──────────────────────────────────┘
//      │ contribute (gradient or pseudo-gradient), all-reduce, apply the
//      │ same update as every member; log the shared weights' hash
//      ├──(stale report, failed round)──▶ kResynchronising
//      ▼
//   kDone (max_steps global steps applied)
//
// What a contribution is and how an average is applied is the
// Synchronizer's (gradient averaging or outer steps). With outer-step
// overlap the round runs on a thread while kAccumulating goes on; its
// result is applied at the next step boundary.
#ifndef TRAINER_COLLAB_PEER_SESSION_H_
#define TRAINER_COLLAB_PEER_SESSION_H_

#include <atomic>
#include <chrono>
#include <future>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/progress/progress_line.h"
#include "trainer/collab/peer_links.h"
#include "trainer/collab/synchronizer.h"
#include "trainer/training/run_loop.h"

namespace dd::collab {

struct SessionOptions {
  int64_t max_steps = 1;  // global steps of the run (outer steps in outer mode)
  // Gradient mode: stop accumulating at this many samples and wait for the
  // round (0: accumulate until it opens).
  int64_t max_local_samples_per_step = 0;
  // Declared upload capacity reported with progress (0: none); shapes the
  // span this peer reduces.
  double bandwidth_mbps = 0;
  absl::Duration poll_interval = absl::Milliseconds(20);
  // While training, progress is reported at most this often (and always
  // when the peer stops to wait for its round): each report is a blocking
  // call, and on a home link saturated by the averaging it queues behind
  // the parts being sent. Zero: after every local step.
  absl::Duration report_interval = absl::Seconds(1);
  // While waiting, the report is renewed this often so it does not expire.
  absl::Duration report_refresh = absl::Seconds(5);
  // How long a peer that missed a step keeps asking for the state of a
  // member that applied it before it concludes that none did (a member may
  // still be applying it when first asked).
  absl::Duration resync_patience = absl::Seconds(15);
  // A peer that finished the run serves its final state this long at most
  // while other live peers are behind (one left out of the last round
  // catches up from it); zero: it stops at once.
  absl::Duration linger = absl::Seconds(120);
  // Outputs of the round's designated writer (its first member), on the
  // schedule every run uses (training/run_loop.h).
  training::OutputSchedule outputs{0, 0, /*checkpoint_at_end=*/false};
  bool write_samples = false;
  // Appends "STEP KEY" per contributed sample after each global step.
  std::string trained_keys_log;
  // Fault tests: poison this peer's contribution to this global step
  // (1-based; 0: never).
  int64_t nan_contribution_at_step_for_test = 0;
};

enum class PeerState { kJoining, kAccumulating, kWaitingForRound, kAveraging, kResynchronising, kDone };
const char* PeerStateName(PeerState state);

struct SessionStats {
  int64_t stale_dropped = 0;   // contributions dropped: a round went ahead without this peer
  int64_t rounds_failed = 0;   // rounds that failed on this peer
  int64_t rounds_skipped = 0;  // rounds for another step than this peer's
  int64_t nonfinite = 0;       // contributions sent with weight 0
  int64_t resyncs = 0;         // states downloaded
  int64_t states_refused = 0;  // downloaded states whose hash the members did not confirm
  int64_t diverged = 0;        // times the coordinator found this peer's hash outvoted
  int64_t rounds_withheld = 0; // rounds taken part in with nothing, diverged
  uint64_t bytes_sent = 0, bytes_received = 0;
  // The shared weights' hash after each global step this peer applied, or
  // went on from when nobody applied it (then the step before's weights);
  // the newest kHashesKept, so a run of any length holds a bounded record.
  static constexpr size_t kHashesKept = 1024;
  std::map<uint64_t, std::string> hashes;
};

class PeerSession {
 public:
  // Every pointer must outlive the session.
  PeerSession(SessionOptions options, Synchronizer* sync, CoordinatorLink* coordinator,
              BatchSource* batches, LocalModel* model, RoundAverager* averager,
              StateExchange* states);
  ~PeerSession();  // waits for a round still running

  // Advances until max_steps global steps are applied. Errors end the run:
  // the batch source's, the model's, the coordinator's when it cannot be
  // reached to join.
  absl::Status Run();
  // One transition.
  absl::Status Advance();

  PeerState state() const { return state_; }
  // Global steps whose update this peer holds.
  uint64_t applied_steps() const { return applied_; }
  const SessionStats& stats() const { return stats_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct InFlightRound;

  absl::Status Join();
  absl::Status Accumulate();
  absl::Status WaitForRound();
  absl::Status StartRound();
  absl::Status Resynchronise();
  // The hash of the weights after `step` that its round's members confirm,
  // waiting up to resync_patience for their reports; nullopt when none is.
  std::optional<std::string> AwaitConfirmedHash(uint64_t step);
  // Donors whose states a resynchronisation tries before it gives up.
  static constexpr int kDonorsTried = 3;
  // Reports this peer's samples; moves to kAveraging when the answer names
  // its round, to kResynchronising when its step is stale.
  absl::Status ReportAndLook();
  // Moves to kAveraging when the coordinator has a round for this peer.
  bool TakeRound();
  // Applies the in-flight round once it is done (or waits for it with
  // `wait`). True when one was finished.
  absl::StatusOr<bool> FinishRound(bool wait);
  absl::Status WriteOutputs(bool designated);
  // Queues how round `round_id` ended here, for the next report.
  void AddRoundResult(uint64_t round_id, bool applied, double averaging_seconds);
  // Sends the queued round results, and the hash of the newest step applied
  // if not reported yet, in a report that joins no round: before the
  // session ends (the coordinator counts a round whose members stay silent
  // as failed) and before a resynchronisation (the members' hashes confirm
  // downloaded states). With `always`, a report is sent even with nothing
  // new (the newest hash again): it tells where this peer stands.
  void FlushRoundResults(bool always = false);
  // StateExchange::FetchNewer(*after), except that a state of a step before
  // the one being caught up to that the coordinator cannot confirm any more
  // (no round that made it is kept) is FailedPrecondition, as if nobody
  // were ahead yet: it is not imported over this peer's weights, and
  // `*after` becomes its step, so no donor sends a state of it again.
  absl::StatusOr<StateExchange::Snapshot> FetchConfirmable(uint64_t* after,
                                                          const std::set<std::string>& refused);
  // Tells the state exchange this peer's step and publishes a state when
  // another peer waits for one (called where the loop is between steps).
  void AtStepBoundary();
  // Adds the oldest hash not reported yet to `request` (else, unless
  // `only_new`, the newest again).
  void AttachHash(cv1::ReportProgressRequest* request, bool only_new);
  void Publish(bool current);
  void ToResync(uint64_t target, std::string why);
  // Samples per second over the current global step (the last step's while
  // this one has none yet); NextWindow starts the next step's.
  double Rate() const;
  void NextWindow();
  // Seconds since the last metrics row; NextRecord starts the next row's
  // window (time, compute, bytes).
  double SinceRecord() const;
  void NextRecord();
  // Keeps `hash` as that of the shared weights after `step` (the newest
  // SessionStats::kHashesKept); the next report carries the oldest new one.
  void RecordHash(uint64_t step, std::string hash);
  // Waits for the hash of the last step applied, records it and logs the
  // step's line. Called before anything writes the weights the hash reads
  // (the next update, outputs, a downloaded state) and at the end.
  void ResolveHash();
  // Writes the open local-step row (outer steps), if any.
  absl::Status CloseLocalRow();
  // After the last step: serves the final state while other live peers are
  // behind, for at most options_.linger.
  void Linger();

  // Fixed after construction.
  const SessionOptions options_;
  Synchronizer* const sync_;
  CoordinatorLink* const coordinator_;
  BatchSource* const batches_;
  LocalModel* const model_;
  RoundAverager* const averager_;
  StateExchange* const states_;

  // Used by the session's thread only.
  PeerState state_ = PeerState::kJoining;
  uint64_t applied_ = 0;    // global steps applied
  uint64_t next_step_ = 0;  // the step this peer's training counts toward
  uint64_t last_round_id_ = 0;
  std::optional<cv1::Round> pending_;
  struct PendingHash {
    uint64_t step = 0;
    std::string line;  // the step's log line, less the hash
    std::future<std::string> hash;
  };
  std::optional<PendingHash> pending_hash_;
  std::unique_ptr<InFlightRound> in_flight_;
  uint64_t resync_target_ = 0;
  std::string resync_why_;
  // The round missed was abandoned by every member: there is no state to
  // download.
  bool resync_abandoned_ = false;
  // This peer still holds the run's initial weights (it started at step 0
  // and has applied or downloaded nothing), and their hash once needed.
  bool holds_initial_weights_ = false;
  std::string initial_hash_;
  // Donors that served a state proven bad (not a valid state of this model,
  // or weights other than the ones the round's members confirmed): not
  // asked again this session.
  std::set<std::string> dishonest_donors_;
  // Set when the coordinator found this peer's weights diverged: the hash
  // the other members hold.
  std::string resync_consensus_;
  // The verdict came after the coordinator had made this peer a member of a
  // round it had not started: it takes part in that round with nothing
  // (zeros at weight 0, so the other members need not wait out the round's
  // deadline for its spans), then resynchronises instead of applying it.
  bool withhold_pending_round_ = false;
  absl::Time last_report_ = absl::InfinitePast();
  uint64_t last_reported_hash_step_ = 0;  // of stats_.hashes
  // The newest applied step's numbers, sent with the next report (for the
  // run's history at the coordinator), and the step last sent.
  cv1::StepTelemetry telemetry_;
  uint64_t telemetry_sent_step_ = 0;
  // How this peer's rounds ended, not reported yet (the newest 16).
  std::vector<cv1::RoundResult> round_results_;
  SessionStats stats_;
  ProgressLine progress_;
  // Timing since the last metrics record.
  double compute_s_ = 0;
  Clock::time_point record_start_ = Clock::now();
  uint64_t record_bytes_sent_ = 0, record_bytes_received_ = 0;
  // Outer steps: the local step whose row is still open, and the outer step
  // it trained toward.
  std::optional<training::StepReport> local_row_;
  uint64_t local_row_outer_step_ = 0;
  // Samples per second, over the current global step.
  double window_samples_ = 0;
  double previous_rate_ = 0;
  Clock::time_point window_start_ = Clock::now();
};

}  // namespace dd::collab

#endif  // TRAINER_COLLAB_PEER_SESSION_H_
