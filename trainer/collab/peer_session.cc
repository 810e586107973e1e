#include "trainer/collab/peer_session.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <set>
#include <utility>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/status/status_macros.h"

namespace dd::collab {
namespace {

// Whether a report's round results reached the coordinator's record: it
// records them before it judges the step, so a stale step's report
// (FailedPrecondition) counted them too.
bool ResultsRecorded(const absl::Status& report) {
  return report.ok() || report.code() == absl::StatusCode::kFailedPrecondition;
}

}  // namespace

const char* PeerStateName(PeerState s) {
  switch (s) {
    case PeerState::kJoining: return "joining";
    case PeerState::kAccumulating: return "accumulating";
    case PeerState::kWaitingForRound: return "waiting for a round";
    case PeerState::kAveraging: return "averaging";
    case PeerState::kResynchronising: return "resynchronising";
    case PeerState::kDone: return "done";
  }
  return "?";
}

// A round this peer takes part in, run on its own thread.
struct PeerSession::InFlightRound {
  cv1::Round round;
  uint32_t my_index = 0;
  Contribution contribution;
  absl::Time started;
  std::thread thread;
  std::atomic<bool> done{false};
  absl::StatusOr<averaging::AllReduceResult> result = absl::UnknownError("not run");
  bool withheld = false;  // diverged: takes part with nothing, applies nothing
};

PeerSession::PeerSession(SessionOptions options, Synchronizer* sync, CoordinatorLink* coordinator,
                         BatchSource* batches, LocalModel* model, RoundAverager* averager,
                         StateExchange* states)
    : options_(std::move(options)),
      sync_(sync),
      coordinator_(coordinator),
      batches_(batches),
      model_(model),
      averager_(averager),
      states_(states),
      progress_("collaborative training", static_cast<uint64_t>(options_.max_steps), "steps") {}

PeerSession::~PeerSession() {
  if (in_flight_ && in_flight_->thread.joinable()) in_flight_->thread.join();
  if (pending_hash_.has_value()) pending_hash_->hash.wait();
}

absl::Status PeerSession::Run() {
  while (state_ != PeerState::kDone) RETURN_IF_ERROR(Advance());
  ResolveHash();
  absl::Status closed = CloseLocalRow();  // the last one holds the last round's traffic and wait
  Linger();
  return closed;
}

void PeerSession::Linger() {
  // Without it, a peer left out of the last round (or joining at the end)
  // found nobody to serve the last step's state once the others had
  // finished, and ended on weights of its own.
  if (options_.linger <= absl::ZeroDuration()) return;
  const absl::Time give_up = absl::Now() + options_.linger;
  absl::Time reported = absl::InfinitePast();
  bool serving = false;
  while (true) {
    if (absl::Now() - reported >= options_.report_refresh) {
      // Tells the coordinator this peer is done (and the final hash, which
      // confirms the state it serves); renewed so a restarted coordinator
      // learns it too.
      FlushRoundResults(/*always=*/true);
      reported = absl::Now();
    }
    auto behind = coordinator_->PeersBehind(applied_);
    if (!behind.ok() || *behind == 0) break;
    if (absl::Now() >= give_up) {
      LOG(WARNING) << "stopped serving the final state after " << options_.linger << ": "
                   << *behind << " peers still behind global step " << applied_;
      break;
    }
    if (!serving) {
      // Only now: a state is a copy of every weight and optimizer moment.
      LOG(INFO) << "run finished; serving the state of global step " << applied_ << " while "
                << *behind << " peers are behind (at most " << options_.linger << ")";
      Publish(/*current=*/true);
      serving = true;
    }
    absl::SleepFor(std::min(options_.report_refresh, absl::Seconds(1)));
  }
  if (serving) states_->StopServingCurrent();
}

absl::Status PeerSession::Advance() {
  switch (state_) {
    case PeerState::kJoining: return Join();
    case PeerState::kAccumulating: return Accumulate();
    case PeerState::kWaitingForRound: return WaitForRound();
    case PeerState::kAveraging: return StartRound();
    case PeerState::kResynchronising: return Resynchronise();
    case PeerState::kDone: return absl::OkStatus();
  }
  return absl::InternalError("unknown peer state");
}

double PeerSession::Rate() const {
  const double s = std::chrono::duration<double>(Clock::now() - window_start_).count();
  // A window that has just begun says nothing yet (its first report has no
  // samples): the last finished window's rate stands in.
  if (window_samples_ == 0 || s <= 0) return previous_rate_;
  return window_samples_ / s;
}

void PeerSession::NextWindow() {
  const double s = std::chrono::duration<double>(Clock::now() - window_start_).count();
  if (window_samples_ > 0 && s > 0) previous_rate_ = window_samples_ / s;
  window_samples_ = 0;
  window_start_ = Clock::now();
}

double PeerSession::SinceRecord() const {
  return std::chrono::duration<double>(Clock::now() - record_start_).count();
}

void PeerSession::NextRecord() {
  compute_s_ = 0;
  record_start_ = Clock::now();
  record_bytes_sent_ = stats_.bytes_sent;
  record_bytes_received_ = stats_.bytes_received;
}

absl::Status PeerSession::CloseLocalRow() {
  if (!local_row_.has_value()) return absl::OkStatus();
  // Outer steps: one metrics row per local step, covering the wall time from
  // its first batch to the next local step's (its report, any wait and the
  // rounds that finished meanwhile), so a run's rows add up to its time and
  // its traffic.
  const double step_s = SinceRecord();
  absl::Status s = model_->RecordMetrics(
      *local_row_, {{"outer_step", double(local_row_outer_step_)},
                    {"bytes_sent", double(stats_.bytes_sent - record_bytes_sent_)},
                    {"bytes_received", double(stats_.bytes_received - record_bytes_received_)},
                    {"compute_seconds", compute_s_},
                    {"waiting_seconds", std::max(0.0, step_s - compute_s_)},
                    {"step_seconds", step_s},
                    {"local_samples_per_second", Rate()}});
  local_row_.reset();
  NextRecord();
  return s;
}

void PeerSession::RecordHash(uint64_t step, std::string hash) {
  stats_.hashes[step] = std::move(hash);
  if (stats_.hashes.size() > SessionStats::kHashesKept) stats_.hashes.erase(stats_.hashes.begin());
}

void PeerSession::ResolveHash() {
  if (!pending_hash_.has_value()) return;
  const std::string hash = pending_hash_->hash.get();
  RecordHash(pending_hash_->step, hash);
  LOG(INFO) << pending_hash_->line << hash.substr(0, 16);
  pending_hash_.reset();
}

void PeerSession::Publish(bool current) {
  auto bytes = model_->ExportState(sync_->Extras());
  if (!bytes.ok()) {
    LOG(WARNING) << "state snapshot: " << bytes.status();
    return;
  }
  states_->Publish({applied_, std::move(*bytes)}, current);
}

void PeerSession::AtStepBoundary() {
  states_->AtStepBoundary(applied_);
  if (states_->Wanted()) Publish(false);
}

void PeerSession::ToResync(uint64_t target, std::string why) {
  resync_target_ = target;
  resync_why_ = std::move(why);
  state_ = PeerState::kResynchronising;
}

absl::Status PeerSession::Join() {
  auto collaboration = coordinator_->GlobalStep();
  if (!collaboration.ok()) return collaboration.status();
  // The trainer's step is the global step in gradient mode; outer steps
  // start from the run's beginning.
  applied_ = next_step_ =
      sync_->mode() == SyncMode::kGradients ? static_cast<uint64_t>(model_->step()) : 0;
  holds_initial_weights_ = applied_ == 0;
  if (*collaboration > applied_) {
    // A late joiner starts from the collaboration's weights, not the base.
    ToResync(*collaboration, "late join");
  } else {
    state_ = PeerState::kAccumulating;
  }
  return absl::OkStatus();
}

absl::Status PeerSession::Accumulate() {
  AtStepBoundary();  // any point here is one
  ASSIGN_OR_RETURN(bool finished, FinishRound(/*wait=*/false));
  if (finished && state_ != PeerState::kAccumulating) return absl::OkStatus();
  if (applied_ >= static_cast<uint64_t>(options_.max_steps) && !in_flight_) {
    ResolveHash();  // the last step's hash goes with the last report
    FlushRoundResults();
    state_ = PeerState::kDone;
    return absl::OkStatus();
  }
  const bool more = next_step_ < static_cast<uint64_t>(options_.max_steps) &&
                    sync_->MayTrain(options_.max_local_samples_per_step);
  if (!more) {
    state_ = PeerState::kWaitingForRound;
    return absl::OkStatus();
  }
  // A new local step starts: the previous one's row closes.
  if (sync_->AtBoundary()) RETURN_IF_ERROR(CloseLocalRow());
  ASSIGN_OR_RETURN(data::Batch batch, batches_->Next());
  const int64_t samples = batch.pixels.defined() ? batch.pixels.size(0) : batch.keys.size();
  const auto compute_start = Clock::now();
  RETURN_IF_ERROR(model_->AccumulateBatch(batch).status());
  ASSIGN_OR_RETURN(std::optional<training::StepReport> local, sync_->AfterBatch(samples));
  compute_s_ += std::chrono::duration<double>(Clock::now() - compute_start).count();
  window_samples_ += samples;
  coordinator_->SetSamplesPerSecond(Rate());
  if (local.has_value()) {
    local_row_ = *local;
    local_row_outer_step_ = applied_;
  }
  if (!sync_->AtBoundary()) return absl::OkStatus();
  const bool stopping = next_step_ >= static_cast<uint64_t>(options_.max_steps) ||
                        !sync_->MayTrain(options_.max_local_samples_per_step);
  if (stopping || absl::Now() - last_report_ >= options_.report_interval) return ReportAndLook();
  return absl::OkStatus();
}

absl::Status PeerSession::ReportAndLook() {
  last_report_ = absl::Now();
  if (pending_hash_.has_value() &&
      pending_hash_->hash.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
    ResolveHash();  // ready: report the newest hash
  }
  cv1::ReportProgressRequest request;
  request.set_global_step(next_step_);
  request.set_samples_accumulated(sync_->samples());
  request.set_samples_per_second(Rate());
  request.set_bandwidth_mbps(options_.bandwidth_mbps);
  request.set_after_round_id(last_round_id_);
  AttachHash(&request, /*only_new=*/false);
  if (telemetry_.step() > telemetry_sent_step_) {
    *request.mutable_telemetry() = telemetry_;
    telemetry_sent_step_ = telemetry_.step();
  }
  for (const auto& r : round_results_) *request.add_round_results() = r;
  auto report = coordinator_->Report(request);
  if (ResultsRecorded(report.status())) round_results_.clear();
  if (report.ok()) {
    if (report->diverged() && !in_flight_) {
      // The weights this peer holds are not the collaboration's: take a
      // member's state for the same step (what it trained since is lost).
      ++stats_.diverged;
      LOG(WARNING) << "parameters after global step " << request.hash_step() << " ("
                   << request.params_hash().substr(0, 16) << ") differ from the other members' ("
                   << report->consensus_hash().substr(0, 16) << "): resynchronising";
      resync_consensus_ = report->consensus_hash();
      if (report->has_round() && report->round().round_id() > last_round_id_) {
        pending_ = report->round();
        withhold_pending_round_ = true;
        state_ = PeerState::kAveraging;
        return absl::OkStatus();
      }
      ToResync(applied_, "parameters diverged");
      return absl::OkStatus();
    }
    if (report->has_round() && report->round().round_id() > last_round_id_) {
      pending_ = report->round();
      state_ = PeerState::kAveraging;
    }
    return absl::OkStatus();
  }
  if (absl::IsNotFound(report.status())) {
    // Evicted (silent past the coordinator's TTL: a stalled link or
    // machine) or removed by an admin. Its leases and its place in the
    // rounds are gone, and what it accumulated counts for nothing: training
    // on unheard would never end. A restart joins as a new incarnation and
    // catches up from the others (the containers' restart policies do it).
    return absl::UnavailableError(absl::StrCat(
        "this peer is no longer a member of the run (", report.status().message(),
        "); restart it to join again"));
  }
  if (report.status().code() != absl::StatusCode::kFailedPrecondition) {
    LOG(WARNING) << "progress report: " << report.status();
    return absl::OkStatus();
  }
  // A stale step, or another holder of this peer's credential joined as it
  // (the coordinator now knows that incarnation only): this process must
  // stop rather than resynchronise and train as a ghost for ever.
  if (absl::Status member = coordinator_->CheckMembership();
      member.code() == absl::StatusCode::kFailedPrecondition) {
    return absl::AbortedError(absl::StrCat(
        "another process joined as this peer and took its place (", member.message(),
        "); this one stops"));
  }
  // The step moved on: by a round that includes this peer, or without it.
  if (TakeRound()) return absl::OkStatus();
  ++stats_.stale_dropped;
  LOG(WARNING) << "stale gradients dropped (" << report.status().message() << ")";
  auto now = coordinator_->GlobalStep();
  ToResync(now.ok() ? *now : next_step_ + 1, "missed a round");
  return absl::OkStatus();
}

bool PeerSession::TakeRound() {
  auto round = coordinator_->GetRound(last_round_id_);
  if (!round.ok() || !round->has_value()) return false;
  pending_ = **round;
  state_ = PeerState::kAveraging;
  return true;
}

absl::Status PeerSession::WaitForRound() {
  AtStepBoundary();
  if (next_step_ >= static_cast<uint64_t>(options_.max_steps)) {
    // Nothing more to train: finish the last round, then stop.
    ASSIGN_OR_RETURN(bool finished, FinishRound(/*wait=*/true));
    if (!finished || state_ == PeerState::kWaitingForRound) state_ = PeerState::kAccumulating;
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(bool finished, FinishRound(/*wait=*/false));
  if (finished && state_ != PeerState::kWaitingForRound) return absl::OkStatus();
  if (sync_->MayTrain(options_.max_local_samples_per_step)) {
    state_ = PeerState::kAccumulating;
    return absl::OkStatus();
  }
  if (TakeRound()) return absl::OkStatus();
  // A waiting peer reports the hash of the step it applied as soon as it
  // is known: a peer downloading that step's state waits for the members'
  // hashes to confirm it.
  const bool new_hash =
      pending_hash_.has_value() &&
      pending_hash_->hash.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
  if (new_hash || absl::Now() - last_report_ > options_.report_refresh) return ReportAndLook();
  absl::SleepFor(options_.poll_interval);
  return absl::OkStatus();
}

absl::Status PeerSession::StartRound() {
  cv1::Round r = std::move(*pending_);
  pending_.reset();
  const bool withheld = std::exchange(withhold_pending_round_, false);
  last_round_id_ = std::max(last_round_id_, r.round_id());
  state_ = PeerState::kAccumulating;
  if (in_flight_) {
    // The previous round must be applied before the next contribution.
    ASSIGN_OR_RETURN(bool finished, FinishRound(/*wait=*/true));
    (void)finished;
    if (state_ != PeerState::kAccumulating) return absl::OkStatus();
  }
  if (r.global_step() != next_step_) {
    ++stats_.rounds_skipped;
    LOG(WARNING) << "round " << r.round_id() << " is for step " << r.global_step()
                 << ", this peer is at " << next_step_ << "; skipped";
    if (withheld) ToResync(applied_, "parameters diverged");
    return absl::OkStatus();
  }
  auto f = std::make_unique<InFlightRound>();
  f->round = std::move(r);
  bool member = false;
  for (int i = 0; i < f->round.members_size(); ++i) {
    if (f->round.members(i).peer_id() == coordinator_->peer_id()) {
      f->my_index = i;
      member = true;
    }
  }
  if (!member) return absl::InternalError("a round without this peer was handed to it");
  const bool poison = options_.nan_contribution_at_step_for_test > 0 &&
                      next_step_ + 1 == static_cast<uint64_t>(options_.nan_contribution_at_step_for_test);
  ASSIGN_OR_RETURN(f->contribution, sync_->Contribute(next_step_, poison));
  f->started = absl::Now();
  f->withheld = withheld;
  if (withheld) {
    ++stats_.rounds_withheld;
    LOG(WARNING) << "round " << f->round.round_id()
                 << ": taking part with nothing (this peer's weights diverged); it "
                    "resynchronises after the round";
  }
  InFlightRound* raw = f.get();
  raw->thread = std::thread([this, raw] {
    // The synchronizer's model-sized work before and after the exchange
    // runs here, beside the local steps, not between them.
    Contribution& c = raw->contribution;
    absl::Status prepared = sync_->Prepare(c);
    if (raw->withheld) {
      std::fill(c.values.begin(), c.values.end(), 0.0f);
      c.weight = 0;
      c.keys.clear();
    }
    if (!prepared.ok()) {
      raw->result = prepared;
    } else {
      raw->result = averager_->Average(raw->round, &c.values, c.weight, c.codec_errors);
      if (raw->result.ok() && raw->result->fraction_averaged >= 1.0) {
        if (absl::Status concluded = sync_->Conclude(c); !concluded.ok()) raw->result = concluded;
      }
    }
    raw->done = true;
  });
  in_flight_ = std::move(f);
  ++next_step_;
  if (!sync_->Overlaps()) {
    ASSIGN_OR_RETURN(bool finished, FinishRound(/*wait=*/true));
    (void)finished;
  }
  // Take part in the next step at once (with the samples trained so far,
  // often none): a round's members are the peers that reported toward its
  // step, so faster peers that reach the target before this peer's first
  // local step ends do not leave it out (it would drop its work and
  // download the state).
  if (state_ == PeerState::kAccumulating && next_step_ < static_cast<uint64_t>(options_.max_steps)) {
    return ReportAndLook();
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> PeerSession::FinishRound(bool wait) {
  if (!in_flight_ || (!wait && !in_flight_->done)) return false;
  in_flight_->thread.join();
  std::unique_ptr<InFlightRound> f = std::move(in_flight_);
  const cv1::Round& r = f->round;
  const double averaging_s = absl::ToDoubleSeconds(absl::Now() - f->started);
  if (!f->contribution.local_finite) {
    ++stats_.nonfinite;
    LOG(WARNING) << "global step " << f->contribution.global_step + 1
                 << ": local values were not finite; contributed with weight 0";
  }
  if (f->result.ok() && f->result->fraction_averaged < 1.0) {
    // Part of the vector kept this peer's own values (a reducer died or
    // timed out): applying it would leave this peer's weights unlike the
    // others'. A member that got the whole average is ahead and serves its
    // state; when none did, every member still holds the same weights.
    f->result = absl::UnavailableError(absl::StrFormat(
        "only %.3f of the vector was averaged", f->result->fraction_averaged));
  }
  AddRoundResult(r.round_id(), f->result.ok(), averaging_s);
  if (!f->result.ok()) {
    // This peer misses the step and takes the state of a peer that
    // applied it.
    ++stats_.rounds_failed;
    LOG(WARNING) << "round " << r.round_id() << " failed on this peer: " << f->result.status();
    // Aborted: every honest member abandons the round (an audit found its
    // reduction dishonest), so nobody honest is ahead to download from;
    // a member claiming to be is the one caught.
    resync_abandoned_ = absl::IsAborted(f->result.status());
    ToResync(r.global_step() + 1, resync_abandoned_ ? "abandoned round" : "failed round");
    return true;
  }
  if (f->withheld) {
    // The round went through for the others; this peer's weights are not
    // theirs, so it takes the step's state from a member that applied it.
    ToResync(r.global_step() + 1, "parameters diverged");
    return true;
  }
  ResolveHash();  // the update below changes the weights it reads
  const averaging::AllReduceResult& averaged = *f->result;
  stats_.bytes_sent += averaged.bytes_sent;
  stats_.bytes_received += averaged.bytes_received;
  const auto apply_start = Clock::now();
  ASSIGN_OR_RETURN(training::StepReport step, sync_->Apply(f->contribution));
  holds_initial_weights_ = false;
  compute_s_ += std::chrono::duration<double>(Clock::now() - apply_start).count();
  applied_ = f->contribution.global_step + 1;
  if (sync_->mode() == SyncMode::kGradients) step.step = static_cast<int64_t>(applied_);
  // The hash (a pass over every weight) is computed beside the next step's
  // compute; the step's line is logged with it.
  pending_hash_.emplace();
  pending_hash_->step = applied_;
  pending_hash_->line = absl::StrFormat(
      "global step %d: %d members, %d local samples of %d, fraction averaged %.3f, weight "
      "%.6g, averaging %.2fs, sent %d B, received %d B, loss %.4f, %sparams ",
      applied_, r.members_size(), f->contribution.samples, r.total_samples(),
      averaged.fraction_averaged, averaged.max_total_weight, averaging_s, averaged.bytes_sent,
      averaged.bytes_received, step.loss,
      // The averaged gradient's (outer steps apply no gradient of their own).
      sync_->mode() == SyncMode::kGradients ? absl::StrFormat("grad norm %.6g, ", step.grad_norm)
                                            : "");
  pending_hash_->hash = std::async(std::launch::async, [this] { return sync_->Hash(); });
  if (!options_.trained_keys_log.empty()) {
    std::ofstream keys(options_.trained_keys_log, std::ios::app);
    for (const std::string& key : f->contribution.keys) keys << applied_ << " " << key << "\n";
    if (!keys.good()) LOG(WARNING) << "cannot append to " << options_.trained_keys_log;
  }
  const double step_s = std::chrono::duration<double>(Clock::now() - window_start_).count();
  const double global_rate = step_s > 0 ? r.total_samples() / step_s : 0.0;
  telemetry_.set_step(applied_);
  telemetry_.set_loss(std::isfinite(step.loss) ? step.loss : 0.0);
  telemetry_.set_learning_rate(step.lr);
  telemetry_.set_step_seconds(step_s);
  telemetry_.set_averaging_seconds(averaging_s);
  telemetry_.set_samples_per_second(Rate());
  if (sync_->mode() == SyncMode::kGradients) {
    // One metrics row per global step (= optimizer step).
    const double record_s = SinceRecord();
    RETURN_IF_ERROR(model_->RecordMetrics(
        step, {{"members", double(r.members_size())},
               {"global_samples", double(r.total_samples())},
               {"global_samples_per_second", global_rate},
               {"local_samples_per_second", Rate()},
               {"averaging_seconds", averaging_s},
               {"step_seconds", record_s},
               {"compute_seconds", compute_s_},
               {"waiting_seconds", std::max(0.0, record_s - compute_s_ - averaging_s)},
               {"fraction_averaged", averaged.fraction_averaged},
               {"bytes_sent", double(averaged.bytes_sent)},
               {"bytes_received", double(averaged.bytes_received)},
               {"stale_gradients_dropped", double(stats_.stale_dropped)},
               {"rounds_failed", double(stats_.rounds_failed)},
               {"nonfinite_gradients", double(stats_.nonfinite)}}));
    NextRecord();
  }
  progress_.Update(applied_, 0,
                   absl::StrFormat("loss %.4f, %d members, %.1f local / %.1f global img/s",
                                   step.loss, r.members_size(), Rate(), global_rate));
  NextWindow();
  RETURN_IF_ERROR(WriteOutputs(/*designated=*/f->my_index == 0));
  return true;
}

absl::Status PeerSession::WriteOutputs(bool designated) {
  // The round's first member writes checkpoints and samples, so N peers do
  // not write N copies.
  if (!designated) return absl::OkStatus();
  const bool last = applied_ >= static_cast<uint64_t>(options_.max_steps);
  const bool save = options_.outputs.CheckpointDue(static_cast<int64_t>(applied_), last);
  const bool samples =
      options_.write_samples && options_.outputs.SamplesDue(static_cast<int64_t>(applied_), last);
  if (!save && !samples) return absl::OkStatus();
  ResolveHash();  // outputs may swap weights in and out of the model
  RETURN_IF_ERROR(sync_->BeginOutput());
  absl::Status status;
  if (save) {
    auto dir = model_->SaveCheckpoint();
    if (dir.ok()) LOG(INFO) << "checkpoint (designated writer): " << *dir;
    status.Update(dir.status());
  }
  if (samples && status.ok()) {
    // A grid is for people watching: when it cannot be drawn or uploaded,
    // training goes on.
    auto grid = model_->WriteSamples();
    if (grid.ok()) {
      LOG(INFO) << "samples (designated writer): " << *grid;
      auto kept = coordinator_->UploadSampleGrid(applied_, *grid);
      if (!kept.ok()) LOG(WARNING) << "sample grid upload: " << kept.status();
    } else {
      LOG(WARNING) << "sample grid of global step " << applied_ << ": " << grid.status();
    }
  }
  status.Update(sync_->EndOutput());
  return status;
}

void PeerSession::AddRoundResult(uint64_t round_id, bool applied, double averaging_seconds) {
  cv1::RoundResult& r = round_results_.emplace_back();
  r.set_round_id(round_id);
  r.set_applied(applied);
  r.set_averaging_seconds(averaging_seconds);
  if (round_results_.size() > 16) round_results_.erase(round_results_.begin());
}

void PeerSession::AttachHash(cv1::ReportProgressRequest* request, bool only_new) {
  if (stats_.hashes.empty()) return;
  // The oldest hash not reported yet (else the newest again), so every
  // step's hash reaches the coordinator, which compares it with the other
  // members' for the same step (and confirms states downloaded by it).
  auto it = stats_.hashes.upper_bound(last_reported_hash_step_);
  if (it == stats_.hashes.end()) {
    if (only_new) return;
    it = std::prev(stats_.hashes.end());
  }
  request->set_hash_step(it->first);
  request->set_params_hash(it->second);
  last_reported_hash_step_ = it->first;
}

void PeerSession::FlushRoundResults(bool always) {
  cv1::ReportProgressRequest request;
  AttachHash(&request, /*only_new=*/!always);
  if (!always && round_results_.empty() && request.params_hash().empty()) return;
  request.set_finished(true);  // joins no round
  request.set_global_step(next_step_);
  request.set_after_round_id(last_round_id_);
  for (const auto& r : round_results_) *request.add_round_results() = r;
  auto report = coordinator_->Report(request);
  if (!report.ok()) LOG(WARNING) << "reporting the last rounds' results: " << report.status();
  // Kept for the next report when the coordinator did not record them (it
  // may be restarting: a restarted one still wants to hear that this member
  // failed the round it started after, see RoundPlanner::RecordResult).
  if (ResultsRecorded(report.status())) round_results_.clear();
}

std::optional<std::string> PeerSession::AwaitConfirmedHash(uint64_t step) {
  // Members report the hash of a step a moment after applying it.
  for (absl::Time give_up = absl::Now() + options_.resync_patience;;) {
    // A failed round's result the coordinator has not recorded yet (it was
    // restarting) may be what holds the confirmation back.
    if (!round_results_.empty()) FlushRoundResults();
    auto h = coordinator_->StepHash(step);
    if (h.ok() && h->confirmed()) return h->hash();
    // Nobody applied a step yet: the weights are the initial ones, which
    // this peer hashed from its own model before the download.
    if (h.ok() && h->initial() && !initial_hash_.empty()) return initial_hash_;
    if (absl::Now() >= give_up) return std::nullopt;
    absl::SleepFor(options_.poll_interval);
  }
}

absl::StatusOr<StateExchange::Snapshot> PeerSession::FetchConfirmable(
    uint64_t* after, const std::set<std::string>& refused) {
  ASSIGN_OR_RETURN(StateExchange::Snapshot snapshot, states_->FetchNewer(*after, refused));
  if (snapshot.global_step >= resync_target_) return snapshot;
  // An older step than the collaboration's (the donor is itself catching
  // up) whose making round the coordinator no longer keeps (it restarted
  // since) can never be confirmed: taking it would overwrite this peer's
  // weights for nothing. The donor serves a newer one once it has one.
  auto h = coordinator_->StepHash(snapshot.global_step);
  if (h.ok() && !h->confirmed() && !h->initial() && h->eligible() == 0) {
    *after = snapshot.global_step;
    return absl::FailedPreconditionError(absl::StrCat(
        "the state served is of global step ", snapshot.global_step,
        ", which nobody can confirm any more (", h->why(), ")"));
  }
  return snapshot;
}

absl::Status PeerSession::Resynchronise() {
  if (in_flight_) {
    // Its result is superseded by the downloaded state.
    in_flight_->thread.join();
    in_flight_.reset();
  }
  ResolveHash();  // the download replaces the weights
  // What this peer trained toward the missed step is dropped (only now: a
  // round still running writes into the synchronizer's residual).
  sync_->Drop();
  // A diverged peer takes a state of its own step (or later) from another
  // member; one that missed a step, a state past its own.
  const std::string consensus = std::move(resync_consensus_);
  resync_consensus_.clear();
  // (A diverged member that took part in a round with nothing wants the
  // step that round made.)
  uint64_t after =
      !consensus.empty() && resync_target_ > 0 ? std::min(applied_, resync_target_ - 1) : applied_;
  // Serve this peer's own state meanwhile (not a diverged one): peers that
  // missed the same round ask each other, and learn that nobody is ahead.
  if (consensus.empty()) Publish(/*current=*/true);
  const bool abandoned = resync_abandoned_;
  resync_abandoned_ = false;
  // The coordinator learns now that this member failed its round, so it
  // does not wait for this member's hash to confirm the step's.
  FlushRoundResults();
  // A state is taken only when its weights have the hash the round's
  // members confirm (a donor may lie); another donor is tried after one
  // that does not.
  std::set<std::string> refused = dishonest_donors_;
  bool replaced = false;  // a refused state overwrote this peer's weights
  absl::StatusOr<StateExchange::Snapshot> snapshot =
      absl::FailedPreconditionError("every member abandoned the round");
  absl::Status loaded = snapshot.status();
  for (int attempt = 0; !abandoned && attempt < kDonorsTried; ++attempt) {
    snapshot = FetchConfirmable(&after, refused);
    for (absl::Time give_up = absl::Now() + options_.resync_patience;
         snapshot.status().code() == absl::StatusCode::kFailedPrecondition &&
         absl::Now() < give_up;) {
      absl::SleepFor(absl::Milliseconds(500));
      snapshot = FetchConfirmable(&after, refused);
    }
    states_->StopServingCurrent();  // the weights are about to change
    loaded = snapshot.status();
    if (!loaded.ok()) break;
    LocalModel::StateExtras extras;
    if (holds_initial_weights_ && initial_hash_.empty()) {
      // The run's initial weights confirm a state of a step nobody applied:
      // hashed (a pass over every weight) only now, before they go.
      initial_hash_ = sync_->Hash();
    }
    loaded = model_->ImportState(snapshot->bytes, &extras);  // all or nothing
    bool proven_bad = !loaded.ok();  // not a valid state of this model
    if (loaded.ok()) {
      replaced = true;
      holds_initial_weights_ = false;
      loaded = sync_->Restore(extras);
      proven_bad = !loaded.ok();
    }
    if (loaded.ok()) {
      const std::string hash = sync_->Hash();
      std::optional<std::string> confirmed = AwaitConfirmedHash(snapshot->global_step);
      if (confirmed == hash) {
        replaced = false;
        break;
      }
      // A confirmed hash that differs proves the donor's weights wrong; no
      // confirmation yet (the members' reports are late) proves nothing.
      proven_bad = confirmed.has_value();
      loaded = absl::FailedPreconditionError(absl::StrCat(
          "its weights (", hash.substr(0, 16), ") are not those the round's members confirm (",
          confirmed.has_value() ? confirmed->substr(0, 16) : std::string("none confirmed"), ")"));
    }
    ++stats_.states_refused;
    LOG(WARNING) << "state of global step " << snapshot->global_step << " from "
                 << snapshot->donor << " refused: " << loaded;
    refused.insert(snapshot->donor);
    if (proven_bad && dishonest_donors_.insert(snapshot->donor).second) {
      LOG(WARNING) << "donor " << snapshot->donor << " is not asked for a state again";
    }
  }
  if (replaced) {
    // This peer's own weights are gone and no donor's are confirmed: it
    // must not train on them (a restart joins again and downloads).
    return absl::DataLossError(absl::StrCat(
        "no state downloaded for global step ", resync_target_,
        " had the weights the round's members confirm (", loaded.message(), ")"));
  }
  ++stats_.resyncs;
  if (loaded.ok()) {
    applied_ = next_step_ = snapshot->global_step;
    const std::string hash = sync_->Hash();
    // The newest hash now names the downloaded weights (the next report
    // carries it to the coordinator's vote).
    RecordHash(applied_, hash);
    LOG(INFO) << "resynchronised (" << resync_why_ << "): downloaded the state of global step "
              << snapshot->global_step << " (" << snapshot->bytes.size() << " bytes), params "
              << hash.substr(0, 16);
  } else {
    // Nobody is ahead (e.g. the coordinator died after opening the round):
    // every peer still holds the same weights; take the collaboration's step.
    LOG(WARNING) << "not resynchronised (" << resync_why_ << ": " << loaded
                 << "); continuing at global step " << resync_target_
                 << " with this peer's weights";
    sync_->Drop();
    applied_ = next_step_ = resync_target_;
    if (sync_->mode() == SyncMode::kGradients) model_->SetStep(static_cast<int64_t>(applied_));
    // Nobody applied the step: these are its weights, and their hash goes
    // to the vote so a peer downloading them can have them confirmed (after
    // a coordinator restart no round that made the step is left to). A
    // peer that only found no donor to serve it (NotFound) holds weights
    // that may not be the step's, and does not vote for them.
    if (loaded.code() == absl::StatusCode::kFailedPrecondition) {
      RecordHash(applied_, sync_->Hash());
    }
  }
  NextWindow();
  if (applied_ >= static_cast<uint64_t>(options_.max_steps)) {
    state_ = PeerState::kDone;
    return absl::OkStatus();
  }
  state_ = PeerState::kAccumulating;
  // Take part in the next step at once, as after a round: a peer that
  // waited for its first local step to report would find, whenever one
  // faster peer reaches the target alone, the step taken without it again,
  // drop its work and download again, round after round (CI: a late joiner
  // that never trained a step).
  return ReportAndLook();
}

}  // namespace dd::collab
