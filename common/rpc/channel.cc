#include "common/rpc/channel.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/support/client_interceptor.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/rpc/auth.h"
#include "common/rpc/keepalive.h"

namespace dd {

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(
    const std::string& target, const SecurityConfig& security) {
  const bool sends_secret = !security.auth_token.empty() || security.call_token != nullptr;
  if (sends_secret && !security.UsesTls() && !security.insecure && !IsLoopbackTarget(target)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "refusing a plain-text connection to ", target,
        ": the token would cross the network in clear; give --tls_ca (the servers then need "
        "--tls_cert/--tls_key), or --insecure to allow it"));
  }
  auto creds = MakeChannelCredentials(security);
  if (!creds.ok()) return creds.status();
  grpc::ChannelArguments args = ClientChannelArguments();
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  std::shared_ptr<const CallToken> token = security.call_token;
  if (token == nullptr && !security.auth_token.empty()) {
    token = std::make_shared<CallToken>(security.auth_token);
  }
  if (token != nullptr) {
    interceptors.push_back(std::make_unique<BearerTokenInterceptorFactory>(std::move(token)));
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      target, *creds, args, std::move(interceptors));
}

std::unique_ptr<grpc::ClientContext> MakeCallContext(absl::Duration timeout,
                                                     bool wait_for_ready) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  context->set_wait_for_ready(wait_for_ready);
  return context;
}

}  // namespace dd
