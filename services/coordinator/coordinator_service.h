// CoordinatorService: the gRPC adapter of CoordinatorCore (callback API).
// Each call runs on a small pool (ledger writes fsync), never on gRPC's
// threads; the adapter only extracts the admin token from metadata.
#ifndef SERVICES_COORDINATOR_COORDINATOR_SERVICE_H_
#define SERVICES_COORDINATOR_COORDINATOR_SERVICE_H_

#include "common/thread/thread_pool.h"
#include "protos/coordinator.grpc.pb.h"
#include "services/coordinator/coordinator_core.h"

namespace dd::coordinator {

// Metadata key carrying the admin token of the Admin* calls.
inline constexpr char kAdminTokenHeader[] = "x-dd-admin-token";

// Whether a service answers the Admin* calls (and gives full listings to
// the admin token), or another one on the coordinator's admin address does.
enum class AdminCalls { kServed, kElsewhere };

class CoordinatorService final : public v1::Coordinator::CallbackService {
 public:
  // `core` must outlive the service. With AdminCalls::kElsewhere the Admin*
  // calls fail PERMISSION_DENIED whatever token they carry, and the
  // listings ignore the admin token (no lease ids or incarnations).
  explicit CoordinatorService(CoordinatorCore* core, int threads = 64,
                              AdminCalls admin = AdminCalls::kServed);

  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* c, const v1::JoinRequest* req,
                                 v1::JoinResponse* resp) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* c,
                                      const v1::HeartbeatRequest* req,
                                      v1::HeartbeatResponse* resp) override;
  grpc::ServerUnaryReactor* Leave(grpc::CallbackServerContext* c, const v1::LeaveRequest* req,
                                  v1::LeaveResponse* resp) override;
  grpc::ServerUnaryReactor* AcquireChunks(grpc::CallbackServerContext* c,
                                          const v1::AcquireChunksRequest* req,
                                          v1::AcquireChunksResponse* resp) override;
  grpc::ServerUnaryReactor* RenewLeases(grpc::CallbackServerContext* c,
                                        const v1::RenewLeasesRequest* req,
                                        v1::RenewLeasesResponse* resp) override;
  grpc::ServerUnaryReactor* CompleteChunk(grpc::CallbackServerContext* c,
                                          const v1::CompleteChunkRequest* req,
                                          v1::CompleteChunkResponse* resp) override;
  grpc::ServerUnaryReactor* ReleaseChunks(grpc::CallbackServerContext* c,
                                          const v1::ReleaseChunksRequest* req,
                                          v1::ReleaseChunksResponse* resp) override;
  grpc::ServerUnaryReactor* GetRunState(grpc::CallbackServerContext* c,
                                        const v1::GetRunStateRequest* req,
                                        v1::RunState* resp) override;
  grpc::ServerUnaryReactor* ListChunks(grpc::CallbackServerContext* c,
                                       const v1::ListChunksRequest* req,
                                       v1::ListChunksResponse* resp) override;
  grpc::ServerUnaryReactor* ListPeers(grpc::CallbackServerContext* c,
                                      const v1::ListPeersRequest* req,
                                      v1::ListPeersResponse* resp) override;
  grpc::ServerUnaryReactor* ReportProgress(grpc::CallbackServerContext* c,
                                           const v1::ReportProgressRequest* req,
                                           v1::ReportProgressResponse* resp) override;
  grpc::ServerUnaryReactor* GetRound(grpc::CallbackServerContext* c,
                                     const v1::GetRoundRequest* req,
                                     v1::GetRoundResponse* resp) override;
  grpc::ServerUnaryReactor* ListRounds(grpc::CallbackServerContext* c,
                                       const v1::ListRoundsRequest* req,
                                       v1::ListRoundsResponse* resp) override;
  grpc::ServerUnaryReactor* GetStepHash(grpc::CallbackServerContext* c,
                                        const v1::GetStepHashRequest* req,
                                        v1::GetStepHashResponse* resp) override;
  grpc::ServerUnaryReactor* ReportAudits(grpc::CallbackServerContext* c,
                                         const v1::ReportAuditsRequest* req,
                                         v1::ReportAuditsResponse* resp) override;
  grpc::ServerUnaryReactor* UploadSample(grpc::CallbackServerContext* c,
                                         const v1::UploadSampleRequest* req,
                                         v1::UploadSampleResponse* resp) override;
  grpc::ServerUnaryReactor* GetHistory(grpc::CallbackServerContext* c,
                                       const v1::GetHistoryRequest* req,
                                       v1::GetHistoryResponse* resp) override;
  grpc::ServerUnaryReactor* AdminReleaseChunk(grpc::CallbackServerContext* c,
                                              const v1::AdminReleaseChunkRequest* req,
                                              v1::AdminReleaseChunkResponse* resp) override;
  grpc::ServerUnaryReactor* AdminEvictPeer(grpc::CallbackServerContext* c,
                                           const v1::AdminEvictPeerRequest* req,
                                           v1::AdminEvictPeerResponse* resp) override;
  grpc::ServerUnaryReactor* AdminInvite(grpc::CallbackServerContext* c,
                                        const v1::AdminInviteRequest* req,
                                        v1::AdminInviteResponse* resp) override;

 private:
  // The admin token the call carries, or "" where admin calls are served
  // elsewhere.
  std::string AdminTokenOf(grpc::CallbackServerContext* context) const;
  // Runs an Admin* call on the pool, or refuses it here.
  template <typename Request, typename Response, typename Handler>
  grpc::ServerUnaryReactor* Admin(grpc::CallbackServerContext* c, const Request* req,
                                  Response* resp, Handler handler);

  CoordinatorCore* const core_;
  const AdminCalls admin_;
  ThreadPool pool_;
};

}  // namespace dd::coordinator

#endif  // SERVICES_COORDINATOR_COORDINATOR_SERVICE_H_
