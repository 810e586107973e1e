// StateService: serves this peer's training state (protos/peer_state.proto)
// and fetches another peer's. Snapshots are made by the training loop at a
// step boundary when someone asks (Publish), so the loop never races the
// stream; the callback reactors only copy bytes from memory and never block.
#ifndef TRAINER_COLLAB_STATE_SERVICE_H_
#define TRAINER_COLLAB_STATE_SERVICE_H_

#include <grpcpp/channel.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "protos/peer_state.grpc.pb.h"

namespace dd::collab {

namespace tv1 = ::distdiff::trainer::v1;

struct StateSnapshot {
  uint64_t global_step = 0;
  std::string bytes;
  std::string sha256;  // hex
};

class StateService final : public tv1::PeerState::CallbackService {
 public:
  // A download that waits `snapshot_wait` without this peer reaching a step
  // boundary ends UNAVAILABLE (the peer is not stepping; try another); one
  // whose client takes no frame for `idle_timeout` is cancelled, so stalled
  // readers do not keep the download slots.
  explicit StateService(int max_concurrent_downloads = 2,
                        absl::Duration snapshot_wait = absl::Seconds(60),
                        absl::Duration idle_timeout = absl::Seconds(60));
  ~StateService() override;

  // True when a download waits for a snapshot: the training loop should
  // call Publish at its next step boundary.
  bool SnapshotWanted() const;
  // Makes `snapshot` the one served (replacing any older one) and starts
  // the waiting downloads. With `current`, new downloads get it at once
  // instead of waiting for the next step boundary (the loop is paused, e.g.
  // while it resynchronises itself) until the next Publish without it.
  void Publish(std::shared_ptr<const StateSnapshot> snapshot, bool current = false);
  // Ends the `current` mode of the last Publish: new downloads wait for the
  // next step boundary again (the state is about to change).
  void StopServingCurrent();
  // Called by the training loop at every step boundary with the global
  // step of its weights, before SnapshotWanted: the waiting downloads that
  // asked for a newer state than that are answered FAILED_PRECONDITION
  // (naming the step) instead of getting a snapshot, so a peer that is not
  // ahead never sends its state. (A download is answered at a boundary,
  // not at once, because a peer in the middle of a round may be ahead at
  // the next one; a paused peer answers for its current snapshot at once.)
  void AtStepBoundary(uint64_t global_step);

  grpc::ServerWriteReactor<tv1::StateFrame>* DownloadState(
      grpc::CallbackServerContext* context, const tv1::DownloadStateRequest* request) override;

  class Reactor;

 private:
  friend class Reactor;
  // Ends downloads that waited longer than snapshot_wait_, and cancels
  // those idle for longer than idle_timeout_.
  void ExpireWaiting();
  void CancelIdleDownloads() ABSL_LOCKS_EXCLUDED(mu_, writing_mu_);
  // FAILED_PRECONDITION for a download that asked for a state newer than
  // one of `global_step`; nullopt when that state is newer (or it did not
  // ask).
  static std::optional<grpc::Status> NotNewerThanAsked(const tv1::DownloadStateRequest& request,
                                                       uint64_t global_step);

  const int max_downloads_;
  const absl::Duration snapshot_wait_;
  const absl::Duration idle_timeout_;
  std::atomic<int> active_{0};
  mutable absl::Mutex mu_;
  std::shared_ptr<const StateSnapshot> snapshot_ ABSL_GUARDED_BY(mu_);
  std::vector<Reactor*> waiting_ ABSL_GUARDED_BY(mu_);
  bool current_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> wanted_{false};
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Downloads that are writing (a reactor leaves in OnDone, under this
  // lock, so the expirer may cancel one it finds here). Apart from mu_:
  // a cancellation may call OnCancel, which takes mu_.
  absl::Mutex writing_mu_;
  std::set<Reactor*> writing_ ABSL_GUARDED_BY(writing_mu_);
  std::thread expirer_;  // runs ExpireWaiting; last, so it starts last
};

// Downloads a peer's state (verifying its SHA-256). Resumes a broken stream
// from where it stopped while the donor still has the same snapshot. A donor
// that announces more than `max_bytes` (what this model's state can be) is
// refused with ResourceExhausted before anything is stored; the buffer grows
// with the data that actually arrives. With `newer_than`, only a state of a
// later global step: FailedPrecondition (naming the donor's step) when the
// donor's is not, learnt from its answer or its first frame, before the
// state is transferred.
absl::StatusOr<StateSnapshot> FetchState(std::shared_ptr<grpc::Channel> channel,
                                         absl::Duration timeout, uint64_t max_bytes,
                                         std::optional<uint64_t> newer_than = std::nullopt);

}  // namespace dd::collab

#endif  // TRAINER_COLLAB_STATE_SERVICE_H_
