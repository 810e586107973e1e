#include "trainer/averaging/averager_service.h"

#include "common/rpc/auth.h"
#include "common/status/grpc_status.h"

namespace dd::averaging {

AveragerService::AveragerService(absl::Duration early_part_wait, size_t max_held_bytes)
    : registry_(early_part_wait, max_held_bytes) {}

grpc::ServerUnaryReactor* AveragerService::ReducePart(grpc::CallbackServerContext* context,
                                                      const v1::ReducePartRequest* request,
                                                      v1::ReducePartResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  // The sender is who its credential says, whatever the request claims.
  registry_.ReducePart(
      request, response,
      [this, reactor, request, response](const absl::Status& status) {
        if (status.ok() && tamper_) tamper_(*request, response);
        reactor->Finish(ToGrpcStatus(status));
      },
      CallerOf(context->client_metadata()));
  return reactor;
}

}  // namespace dd::averaging
