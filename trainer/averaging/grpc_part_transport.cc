#include "trainer/averaging/grpc_part_transport.h"

#include <grpcpp/client_context.h>

#include "absl/strings/str_cat.h"
#include "common/rpc/channel.h"
#include "common/status/grpc_status.h"
#include "protos/averaging.grpc.pb.h"

namespace dd::averaging {

GrpcPartTransport::GrpcPartTransport(SecurityConfig security) : security_(std::move(security)) {}

std::shared_ptr<grpc::Channel> GrpcPartTransport::ChannelTo(const std::string& address) {
  absl::MutexLock lock(&mu_);
  auto& ch = channels_[address];
  if (ch == nullptr) {
    auto made = MakeChannel(address, security_);
    if (made.ok()) ch = *made;
  }
  return ch;
}

void GrpcPartTransport::Send(const std::string& address, const v1::ReducePartRequest* request,
                             v1::ReducePartResponse* response, absl::Time deadline, Done done) {
  std::shared_ptr<grpc::Channel> channel = ChannelTo(address);
  if (channel == nullptr) {
    done(absl::UnavailableError(absl::StrCat("no channel to ", address)));
    return;
  }
  // The call's state lives until its callback has run.
  struct Call {
    grpc::ClientContext context;
    std::unique_ptr<v1::Averager::Stub> stub;
    Done done;
  };
  auto* call = new Call;
  call->stub = v1::Averager::NewStub(channel);
  call->done = std::move(done);
  call->context.set_deadline(absl::ToChronoTime(deadline));
  call->stub->async()->ReducePart(&call->context, request, response, [call](grpc::Status status) {
    call->done(FromGrpcStatus(status));
    delete call;
  });
}

}  // namespace dd::averaging
