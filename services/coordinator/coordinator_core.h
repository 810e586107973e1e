// CoordinatorCore: the logic behind distdiff.coordinator.v1.Coordinator,
// written with protobuf messages but no gRPC types, so tests drive it
// directly; CoordinatorService is a thin adapter. Error codes per RPC are
// documented in protos/coordinator.proto.
#ifndef SERVICES_COORDINATOR_COORDINATOR_CORE_H_
#define SERVICES_COORDINATOR_COORDINATOR_CORE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/time/clock.h"
#include "protos/coordinator.pb.h"
#include "services/coordinator/ledger/chunk_ledger.h"
#include "services/coordinator/registry/membership.h"
#include "services/coordinator/registry/peer_liveness.h"
#include "services/coordinator/rounds/round_planner.h"
#include "services/coordinator/run_config.h"

namespace dd::coordinator {

namespace v1 = ::distdiff::coordinator::v1;

inline constexpr uint32_t kMaxChunksPerAcquire = 1024;
inline constexpr uint32_t kMaxListPage = 10000;

struct CoordinatorOptions {
  absl::Duration lease_timeout = absl::Minutes(20);
  absl::Duration heartbeat_ttl = absl::Seconds(60);
  std::string dataset_address;
  // Empty: the Admin* calls are disabled (PERMISSION_DENIED).
  std::string admin_token;
};

class CoordinatorCore {
 public:
  // All pointers must outlive the core. Peers join and leave through a
  // Membership over the ledger, liveness and rounds.
  CoordinatorCore(ChunkLedger* ledger, PeerLiveness* liveness, RoundPlanner* rounds,
                  RunConfig config, CoordinatorOptions options, Clock* clock);

  absl::StatusOr<v1::JoinResponse> Join(const v1::JoinRequest& request);
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& request);
  absl::StatusOr<v1::LeaveResponse> Leave(const v1::LeaveRequest& request);
  absl::StatusOr<v1::AcquireChunksResponse> AcquireChunks(const v1::AcquireChunksRequest& request);
  absl::StatusOr<v1::RenewLeasesResponse> RenewLeases(const v1::RenewLeasesRequest& request);
  absl::StatusOr<v1::CompleteChunkResponse> CompleteChunk(const v1::CompleteChunkRequest& request);
  absl::StatusOr<v1::ReleaseChunksResponse> ReleaseChunks(const v1::ReleaseChunksRequest& request);
  absl::StatusOr<v1::RunState> GetRunState(const v1::GetRunStateRequest& request);
  absl::StatusOr<v1::ListChunksResponse> ListChunks(const v1::ListChunksRequest& request);
  absl::StatusOr<v1::ListPeersResponse> ListPeers(const v1::ListPeersRequest& request);
  absl::StatusOr<v1::ReportProgressResponse> ReportProgress(
      const v1::ReportProgressRequest& request);
  absl::StatusOr<v1::GetRoundResponse> GetRound(const v1::GetRoundRequest& request);
  absl::StatusOr<v1::ListRoundsResponse> ListRounds(const v1::ListRoundsRequest& request);
  // `admin_token` is the caller's x-dd-admin-token metadata.
  absl::StatusOr<v1::AdminReleaseChunkResponse> AdminReleaseChunk(
      const v1::AdminReleaseChunkRequest& request, const std::string& admin_token);
  absl::StatusOr<v1::AdminEvictPeerResponse> AdminEvictPeer(
      const v1::AdminEvictPeerRequest& request, const std::string& admin_token);

  // Expires due leases and evicts silent peers (Membership::Tick); call
  // about once a second.
  void Tick();

 private:
  absl::Status CheckAdmin(const std::string& token) const;

  ChunkLedger* const ledger_;
  PeerLiveness* const liveness_;
  RoundPlanner* const rounds_;
  // Joins and removals change the three above together.
  Membership membership_;
  const RunConfig config_;
  const CoordinatorOptions options_;
  Clock* const clock_;
};

// Checks "host:port" (host a name, IPv4 or [IPv6]; port 1-65535).
absl::Status ValidateHostPort(const std::string& address, const char* field);

}  // namespace dd::coordinator

#endif  // SERVICES_COORDINATOR_COORDINATOR_CORE_H_
