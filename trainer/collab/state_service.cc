#include "trainer/collab/state_service.h"

#include <algorithm>
#include <atomic>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/crypto/sha256.h"
#include "common/rpc/auth.h"
#include "common/rpc/failed_stream.h"
#include "common/status/grpc_status.h"

namespace dd::collab {
namespace {

constexpr size_t kFrameBytes = 1 << 20;

}  // namespace

// One download: waits (without a thread) for a snapshot, then writes it
// frame by frame from memory.
class StateService::Reactor : public grpc::ServerWriteReactor<tv1::StateFrame> {
 public:
  Reactor(StateService* service, grpc::CallbackServerContext* context,
          tv1::DownloadStateRequest request)
      : service_(service), context_(context), request_(std::move(request)), created_(absl::Now()) {}

  absl::Time created() const { return created_; }
  const tv1::DownloadStateRequest& request() const { return request_; }

  // Called once with the snapshot to serve (under the service's lock or
  // right after construction).
  void Begin(std::shared_ptr<const StateSnapshot> snapshot) {
    snapshot_ = std::move(snapshot);
    if (request_.offset() > 0 && request_.global_step() != snapshot_->global_step) {
      Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "the snapshot being resumed was replaced; download again from 0"));
      return;
    }
    if (request_.offset() > snapshot_->bytes.size()) {
      Finish(grpc::Status(grpc::StatusCode::OUT_OF_RANGE, "offset past the end of the snapshot"));
      return;
    }
    offset_ = request_.offset();
    {
      absl::MutexLock lock(&service_->writing_mu_);
      service_->writing_.insert(this);
    }
    WriteNext();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
      return;
    }
    last_progress_ms_.store(absl::ToUnixMillis(absl::Now()));
    WriteNext();
  }

  // Cancels the call when the client took no frame for `timeout` (called
  // under writing_mu_, so the reactor is alive).
  bool CancelIfIdle(absl::Time now, absl::Duration timeout) {
    if (now - absl::FromUnixMillis(last_progress_ms_.load()) <= timeout || idle_cancelled_) {
      return false;
    }
    idle_cancelled_ = true;
    context_->TryCancel();
    return true;
  }

  void OnCancel() override {
    absl::MutexLock lock(&service_->mu_);
    auto& w = service_->waiting_;
    auto it = std::find(w.begin(), w.end(), this);
    if (it != w.end()) {
      w.erase(it);
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
    }
  }

  void OnDone() override {
    {
      absl::MutexLock lock(&service_->writing_mu_);
      service_->writing_.erase(this);
    }
    service_->active_.fetch_sub(1);
    delete this;
  }

 private:
  void WriteNext() {
    const std::string& bytes = snapshot_->bytes;
    if (offset_ >= bytes.size() && !first_) {
      Finish(grpc::Status::OK);
      return;
    }
    frame_.Clear();
    frame_.set_global_step(snapshot_->global_step);
    frame_.set_total_bytes(bytes.size());
    frame_.set_offset(offset_);
    if (first_) frame_.set_sha256(snapshot_->sha256);
    first_ = false;
    const size_t n = std::min(kFrameBytes, bytes.size() - offset_);
    frame_.set_data(bytes.data() + offset_, n);
    offset_ += n;
    StartWrite(&frame_);
  }

  StateService* const service_;
  grpc::CallbackServerContext* const context_;
  const tv1::DownloadStateRequest request_;
  const absl::Time created_;
  std::shared_ptr<const StateSnapshot> snapshot_;
  tv1::StateFrame frame_;
  uint64_t offset_ = 0;
  bool first_ = true;
  std::atomic<int64_t> last_progress_ms_{absl::ToUnixMillis(absl::Now())};
  bool idle_cancelled_ = false;  // under writing_mu_
};

StateService::StateService(int max_concurrent_downloads, absl::Duration snapshot_wait,
                           absl::Duration idle_timeout)
    : max_downloads_(max_concurrent_downloads),
      snapshot_wait_(snapshot_wait),
      idle_timeout_(idle_timeout),
      expirer_([this] { ExpireWaiting(); }) {}

StateService::~StateService() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  expirer_.join();
  absl::MutexLock lock(&mu_);
  for (Reactor* r : waiting_) r->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "shutting down"));
  waiting_.clear();
}

void StateService::ExpireWaiting() {
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(500))) {
    const absl::Time now = absl::Now();
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      if (now - (*it)->created() < snapshot_wait_) {
        ++it;
        continue;
      }
      // Nothing is being written yet, so finishing here is safe (as in
      // Publish, under the same lock).
      (*it)->Finish(grpc::Status(
          grpc::StatusCode::UNAVAILABLE,
          absl::StrCat("no snapshot was made within ", absl::FormatDuration(snapshot_wait_),
                       ": this peer is not stepping; try another")));
      it = waiting_.erase(it);
    }
    if (waiting_.empty()) wanted_ = false;
    mu_.Unlock();
    CancelIdleDownloads();
    mu_.Lock();
  }
}

void StateService::CancelIdleDownloads() {
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&writing_mu_);
  for (Reactor* r : writing_) {
    if (r->CancelIfIdle(now, idle_timeout_)) {
      LOG(WARNING) << "a state download took no frame for " << absl::FormatDuration(idle_timeout_)
                   << "; cancelled, so its slot serves another peer";
    }
  }
}

bool StateService::SnapshotWanted() const { return wanted_.load(); }

void StateService::Publish(std::shared_ptr<const StateSnapshot> snapshot, bool current) {
  absl::MutexLock lock(&mu_);
  snapshot_ = snapshot;
  current_ = current;
  wanted_ = false;
  for (Reactor* r : waiting_) {
    if (auto refusal = NotNewerThanAsked(r->request(), snapshot->global_step)) {
      r->Finish(*refusal);  // nothing written yet: safe under the lock
    } else {
      r->Begin(snapshot);
    }
  }
  waiting_.clear();
}

void StateService::StopServingCurrent() {
  absl::MutexLock lock(&mu_);
  current_ = false;
}

void StateService::AtStepBoundary(uint64_t global_step) {
  absl::MutexLock lock(&mu_);
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (auto refusal = NotNewerThanAsked((*it)->request(), global_step)) {
      (*it)->Finish(*refusal);  // as in Publish
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  wanted_ = !waiting_.empty();
}

std::optional<grpc::Status> StateService::NotNewerThanAsked(
    const tv1::DownloadStateRequest& request, uint64_t global_step) {
  if (!request.has_newer_than() || global_step > request.newer_than()) return std::nullopt;
  return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                      absl::StrCat("this peer's state is of global step ", global_step,
                                   ", not newer than ", request.newer_than()));
}

grpc::ServerWriteReactor<tv1::StateFrame>* StateService::DownloadState(
    grpc::CallbackServerContext* context, const tv1::DownloadStateRequest* request) {
  // A run's state goes to its peers only: the run token alone is not one.
  if (!CallerOf(context->client_metadata()).may_use_peer_services()) {
    return new FailedStream<tv1::StateFrame>(grpc::Status(
        grpc::StatusCode::PERMISSION_DENIED,
        "state downloads need a peer credential (join the run first)"));
  }
  {
    // A paused donor answers for its current snapshot at once, even when
    // busy (before taking a slot).
    absl::MutexLock lock(&mu_);
    if (current_ && snapshot_) {
      if (auto refusal = NotNewerThanAsked(*request, snapshot_->global_step)) {
        return new FailedStream<tv1::StateFrame>(*refusal);
      }
    }
  }
  if (active_.fetch_add(1) >= max_downloads_) {
    active_.fetch_sub(1);
    return new FailedStream<tv1::StateFrame>(grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("this peer already serves ", max_downloads_, " state downloads; try another")));
  }
  auto* reactor = new Reactor(this, context, *request);
  absl::MutexLock lock(&mu_);
  if ((request->offset() > 0 && snapshot_ && snapshot_->global_step == request->global_step()) ||
      (current_ && snapshot_)) {
    reactor->Begin(snapshot_);  // resuming, or the loop is paused on a current snapshot
  } else {
    // A fresh snapshot at the next step boundary, so the joiner gets the
    // newest state.
    waiting_.push_back(reactor);
    wanted_ = true;
  }
  return reactor;
}

absl::StatusOr<StateSnapshot> FetchState(std::shared_ptr<grpc::Channel> channel,
                                         absl::Duration timeout, uint64_t max_bytes,
                                         std::optional<uint64_t> newer_than) {
  auto stub = tv1::PeerState::NewStub(channel);
  StateSnapshot out;
  std::string want_sha;
  uint64_t total = 0;
  const absl::Time deadline = absl::Now() + timeout;
  for (int attempt = 0; attempt < 5 && absl::Now() < deadline; ++attempt) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(deadline));
    tv1::DownloadStateRequest request;
    request.set_offset(out.bytes.size());
    request.set_global_step(out.global_step);
    if (newer_than.has_value() && out.bytes.empty()) request.set_newer_than(*newer_than);
    auto reader = stub->DownloadState(&context, request);
    tv1::StateFrame frame;
    while (reader->Read(&frame)) {
      if (frame.total_bytes() > max_bytes) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "the donor announces a state of ", frame.total_bytes(), " bytes; this model's is at most ",
            max_bytes));
      }
      if (frame.offset() != out.bytes.size() ||
          (total != 0 && frame.total_bytes() != total) ||
          out.bytes.size() + frame.data().size() > frame.total_bytes()) {
        return absl::DataLossError("state stream frames do not fit together");
      }
      if (out.bytes.empty()) {
        if (newer_than.has_value() && frame.global_step() <= *newer_than) {
          // A donor that does not filter (or got there first): the first
          // frame says enough.
          context.TryCancel();
          (void)reader->Finish();
          return absl::FailedPreconditionError(absl::StrCat(
              "the donor's state is of global step ", frame.global_step(), ", not newer than ",
              *newer_than));
        }
        out.global_step = frame.global_step();
        total = frame.total_bytes();
        if (!frame.sha256().empty()) want_sha = frame.sha256();
        // No reserve(total): the buffer grows with what arrives, so a donor
        // that announces much and sends little costs little.
      }
      out.bytes.append(frame.data());
    }
    grpc::Status s = reader->Finish();
    if (s.ok() && total > 0 && out.bytes.size() == total) break;
    if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION && out.bytes.empty()) {
      return FromGrpcStatus(s);  // not newer than asked
    }
    if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {  // snapshot replaced
      out = StateSnapshot();
      total = 0;
      continue;
    }
    if (!s.ok() && s.error_code() != grpc::StatusCode::UNAVAILABLE &&
        s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED &&
        s.error_code() != grpc::StatusCode::CANCELLED) {
      return FromGrpcStatus(s);
    }
  }
  if (total == 0 || out.bytes.size() != total) {
    return absl::UnavailableError("the state download did not complete");
  }
  out.sha256 = DigestToHex(Sha256Of(out.bytes));
  if (out.sha256 != want_sha) return absl::DataLossError("the downloaded state fails its SHA-256");
  return out;
}

}  // namespace dd::collab
