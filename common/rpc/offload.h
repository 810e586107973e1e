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

// Calls waiting for a worker beyond this are refused RESOURCE_EXHAUSTED at
// once (clients retry with backoff) instead of queueing without bound.
inline constexpr size_t kMaxQueuedCalls = 1024;

// `fn(const Request&)` returns absl::StatusOr<Response>; its value is moved
// into `*response` and the call finishes with its status. `request` and
// `response` stay valid until Finish, as gRPC guarantees.
template <typename Request, typename Response, typename Fn>
grpc::ServerUnaryReactor* FinishOnPool(ThreadPool* pool, grpc::CallbackServerContext* context,
                                       const Request* request, Response* response, Fn fn,
                                       size_t max_queued = kMaxQueuedCalls) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  bool queued = pool->TrySchedule(
      [reactor, request, response, fn = std::move(fn)]() mutable {
        absl::StatusOr<Response> result = fn(*request);
        if (result.ok()) *response = std::move(*result);
        reactor->Finish(ToGrpcStatus(result.status()));
      },
      max_queued);
  if (!queued) {
    reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                 "the server is overloaded (too many calls waiting); retry later"));
  }
  return reactor;
}

}  // namespace dd

#endif  // COMMON_RPC_OFFLOAD_H_
