// A server-streaming call refused before it starts: callback handlers
// return this reactor when the request is invalid or the server is busy.
#ifndef COMMON_RPC_FAILED_STREAM_H_
#define COMMON_RPC_FAILED_STREAM_H_

#include <grpcpp/support/server_callback.h>

namespace dd {

// Finishes at once with `status` and deletes itself when gRPC is done.
template <typename Frame>
class FailedStream : public grpc::ServerWriteReactor<Frame> {
 public:
  explicit FailedStream(grpc::Status status) { this->Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace dd

#endif  // COMMON_RPC_FAILED_STREAM_H_
