// CoordinatorClient: a trainer peer's side of the coordinator API (join,
// heartbeat, chunk leases, progress reports, averaging rounds), with the
// peer's identity filled in on every call. Errors are the server's status
// as absl::Status; every call has a deadline.
#ifndef TRAINER_COLLAB_COORDINATOR_CLIENT_H_
#define TRAINER_COLLAB_COORDINATOR_CLIENT_H_

#include <grpcpp/channel.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/rpc/auth.h"
#include "protos/coordinator.grpc.pb.h"

namespace dd::collab {

namespace cv1 = ::distdiff::coordinator::v1;

struct JoinOptions {
  std::string listen_address;  // where this peer's Averager answers
  std::string public_address;  // what others dial, when different
  bool client_only = false;
  std::string display_name;
};

class CoordinatorClient {
 public:
  // `token` is the CallToken of `channel` (null when the run has no token):
  // Join sends the run token and then makes the channel send the peer
  // credential it returned; heartbeats keep that credential renewed.
  explicit CoordinatorClient(std::shared_ptr<grpc::Channel> channel,
                             std::shared_ptr<CallToken> token = nullptr);

  // Joins (or rejoins: a new incarnation, proven with the credential held)
  // the run. Waits for the coordinator to be reachable, and for a previous
  // process registered at the same address to fall silent (ALREADY_EXISTS),
  // for up to `wait`.
  absl::StatusOr<cv1::JoinResponse> Join(const JoinOptions& options, absl::Duration wait);
  // Also renews the credential from the response.
  absl::Status Heartbeat(double samples_per_second);
  absl::Status Leave();

  absl::StatusOr<std::vector<cv1::Lease>> Acquire(uint32_t max_chunks);
  // The leases still held after renewal; `lost` gets the ones that were not.
  absl::StatusOr<std::vector<cv1::Lease>> Renew(const std::vector<uint64_t>& lease_ids,
                                                std::vector<uint64_t>* lost);
  // Records a trained chunk. A completion is idempotent (the ledger keeps
  // each chunk's last completed lease), so one the coordinator did not
  // answer (UNAVAILABLE, DEADLINE_EXCEEDED: it restarts) is sent again,
  // each try waiting for the channel, for up to kCompleteRetryFor: a
  // completion lost to a restart would leave the chunk leased, counted as
  // untrained and trained again after the lease expires.
  static constexpr absl::Duration kCompleteRetryFor = absl::Minutes(2);
  absl::StatusOr<cv1::CompleteChunkResponse> Complete(uint64_t chunk_id, uint64_t lease_id,
                                                      uint32_t samples_trained);
  absl::Status Release(const std::vector<uint64_t>& lease_ids);

  // ReportProgress with this peer's identity filled in. FailedPrecondition
  // when `global_step` is not the collaboration's. The response carries the
  // newest round after `after_round_id` that includes this peer, when there
  // is one, and whether this peer's reported hash has diverged.
  absl::StatusOr<cv1::ReportProgressResponse> Report(cv1::ReportProgressRequest request);
  // The newest round after `after_round_id` that includes this peer.
  absl::StatusOr<std::optional<cv1::Round>> GetRound(uint64_t after_round_id);
  // Reports this peer's audit verdicts on round `round_id` (none: only asks)
  // and returns where the round's audits stand.
  absl::StatusOr<cv1::ReportAuditsResponse> ReportAudits(
      uint64_t round_id, const std::vector<cv1::AuditReport>& reports);
  absl::StatusOr<cv1::GetStepHashResponse> GetStepHash(uint64_t step);
  absl::StatusOr<cv1::RunState> GetRunState();
  absl::StatusOr<std::vector<cv1::PeerEntry>> ListPeers();
  // Hands the sample grid of `step` to the status page; returns whether the
  // coordinator kept it (false: it holds a newer one).
  absl::StatusOr<bool> UploadSample(uint64_t step, std::string png);

  std::string peer_id() const;

 private:
  cv1::PeerRef Ref() const;

  std::unique_ptr<cv1::Coordinator::Stub> stub_;
  const std::shared_ptr<CallToken> token_;
  mutable absl::Mutex mu_;
  cv1::PeerRef self_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dd::collab

#endif  // TRAINER_COLLAB_COORDINATOR_CLIENT_H_
