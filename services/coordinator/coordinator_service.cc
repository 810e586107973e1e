#include "services/coordinator/coordinator_service.h"

#include "common/rpc/auth.h"
#include "common/rpc/offload.h"

namespace dd::coordinator {

CoordinatorService::CoordinatorService(CoordinatorCore* core, int threads, AdminCalls admin)
    : core_(core), admin_(admin), pool_(threads) {}

std::string CoordinatorService::AdminTokenOf(grpc::CallbackServerContext* context) const {
  if (admin_ == AdminCalls::kElsewhere) return "";
  const auto& md = context->client_metadata();
  auto it = md.find(kAdminTokenHeader);
  if (it == md.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

template <typename Request, typename Response, typename Handler>
grpc::ServerUnaryReactor* CoordinatorService::Admin(grpc::CallbackServerContext* c,
                                                    const Request* req, Response* resp,
                                                    Handler handler) {
  if (admin_ == AdminCalls::kElsewhere) {
    grpc::ServerUnaryReactor* reactor = c->DefaultReactor();
    reactor->Finish(grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                                 "admin calls are served on the coordinator's admin address "
                                 "(--admin_port), not on this one"));
    return reactor;
  }
  return FinishOnPool(&pool_, c, req, resp,
                      [handler, token = AdminTokenOf(c)](const Request& r) {
                        return handler(r, token);
                      });
}

// One line per RPC: the core does the work on the pool. Calls that act for a
// peer get the caller the authenticator established.
#define DD_COORDINATOR_RPC(Name, Request, Response)                                      \
  grpc::ServerUnaryReactor* CoordinatorService::Name(                                     \
      grpc::CallbackServerContext* c, const v1::Request* req, v1::Response* resp) {       \
    return FinishOnPool(&pool_, c, req, resp,                                             \
                        [this](const v1::Request& r) { return core_->Name(r); });         \
  }
#define DD_COORDINATOR_PEER_RPC(Name, Request, Response)                                 \
  grpc::ServerUnaryReactor* CoordinatorService::Name(                                     \
      grpc::CallbackServerContext* c, const v1::Request* req, v1::Response* resp) {       \
    return FinishOnPool(&pool_, c, req, resp,                                             \
                        [this, caller = CallerOf(*c)](               \
                            const v1::Request& r) { return core_->Name(r, caller); });    \
  }
#define DD_COORDINATOR_LISTING_RPC(Name, Request, Response)                              \
  grpc::ServerUnaryReactor* CoordinatorService::Name(                                     \
      grpc::CallbackServerContext* c, const v1::Request* req, v1::Response* resp) {       \
    return FinishOnPool(                                                                  \
        &pool_, c, req, resp,                                                             \
        [this, caller = CallerOf(*c), token = AdminTokenOf(c)](      \
            const v1::Request& r) { return core_->Name(r, caller, token); });             \
  }

DD_COORDINATOR_PEER_RPC(Join, JoinRequest, JoinResponse)
DD_COORDINATOR_PEER_RPC(Heartbeat, HeartbeatRequest, HeartbeatResponse)
DD_COORDINATOR_PEER_RPC(Leave, LeaveRequest, LeaveResponse)
DD_COORDINATOR_PEER_RPC(AcquireChunks, AcquireChunksRequest, AcquireChunksResponse)
DD_COORDINATOR_PEER_RPC(RenewLeases, RenewLeasesRequest, RenewLeasesResponse)
DD_COORDINATOR_PEER_RPC(CompleteChunk, CompleteChunkRequest, CompleteChunkResponse)
DD_COORDINATOR_PEER_RPC(ReleaseChunks, ReleaseChunksRequest, ReleaseChunksResponse)
DD_COORDINATOR_RPC(GetRunState, GetRunStateRequest, RunState)
DD_COORDINATOR_LISTING_RPC(ListChunks, ListChunksRequest, ListChunksResponse)
DD_COORDINATOR_LISTING_RPC(ListPeers, ListPeersRequest, ListPeersResponse)
DD_COORDINATOR_PEER_RPC(ReportProgress, ReportProgressRequest, ReportProgressResponse)
DD_COORDINATOR_PEER_RPC(GetRound, GetRoundRequest, GetRoundResponse)
DD_COORDINATOR_RPC(ListRounds, ListRoundsRequest, ListRoundsResponse)
DD_COORDINATOR_PEER_RPC(ReportAudits, ReportAuditsRequest, ReportAuditsResponse)
DD_COORDINATOR_RPC(GetStepHash, GetStepHashRequest, GetStepHashResponse)
DD_COORDINATOR_PEER_RPC(UploadSample, UploadSampleRequest, UploadSampleResponse)
DD_COORDINATOR_RPC(GetHistory, GetHistoryRequest, GetHistoryResponse)
#undef DD_COORDINATOR_RPC
#undef DD_COORDINATOR_PEER_RPC
#undef DD_COORDINATOR_LISTING_RPC

grpc::ServerUnaryReactor* CoordinatorService::AdminReleaseChunk(
    grpc::CallbackServerContext* c, const v1::AdminReleaseChunkRequest* req,
    v1::AdminReleaseChunkResponse* resp) {
  return Admin(c, req, resp, [this](const v1::AdminReleaseChunkRequest& r, const std::string& t) {
    return core_->AdminReleaseChunk(r, t);
  });
}

grpc::ServerUnaryReactor* CoordinatorService::AdminEvictPeer(
    grpc::CallbackServerContext* c, const v1::AdminEvictPeerRequest* req,
    v1::AdminEvictPeerResponse* resp) {
  return Admin(c, req, resp, [this](const v1::AdminEvictPeerRequest& r, const std::string& t) {
    return core_->AdminEvictPeer(r, t);
  });
}

grpc::ServerUnaryReactor* CoordinatorService::AdminInvite(grpc::CallbackServerContext* c,
                                                          const v1::AdminInviteRequest* req,
                                                          v1::AdminInviteResponse* resp) {
  return Admin(c, req, resp, [this](const v1::AdminInviteRequest& r, const std::string& t) {
    return core_->AdminInvite(r, t);
  });
}

}  // namespace dd::coordinator
