// Runs a unary RPC's work on a thread pool instead of gRPC's callback thread.
// Callback reactors must never block; work that syncs to disk (ledger writes)
// or waits on locks goes through here.
#ifndef COMMON_RPC_OFFLOAD_H_
#define COMMON_RPC_OFFLOAD_H_

#include <grpcpp/support/server_callback.h>
#include <grpcpp/server_context.h>

#include <utility>

#include "absl/status/statusor.h"
#include "common/status/grpc_status.h"
#include "common/thread/thread_pool.h"

namespace dd {

// `fn(const Request&)` returns absl::StatusOr<Response>; its value is moved
// into `*response` and the call finishes with its status. `request` and
// `response` stay valid until Finish, as gRPC guarantees.
template <typename Request, typename Response, typename Fn>
grpc::ServerUnaryReactor* FinishOnPool(ThreadPool* pool, grpc::CallbackServerContext* context,
                                       const Request* request, Response* response, Fn fn) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  pool->Schedule([reactor, request, response, fn = std::move(fn)]() mutable {
    absl::StatusOr<Response> result = fn(*request);
    if (result.ok()) *response = std::move(*result);
    reactor->Finish(ToGrpcStatus(result.status()));
  });
  return reactor;
}

}  // namespace dd

#endif  // COMMON_RPC_OFFLOAD_H_
