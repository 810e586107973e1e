#include "trainer/collab/coordinator_client.h"

#include <glog/logging.h>

#include "absl/time/clock.h"
#include "common/rpc/channel.h"
#include "common/status/grpc_status.h"

namespace dd::collab {

CoordinatorClient::CoordinatorClient(std::shared_ptr<grpc::Channel> channel,
                                     std::shared_ptr<CallToken> token)
    : stub_(cv1::Coordinator::NewStub(channel)), token_(std::move(token)) {}

cv1::PeerRef CoordinatorClient::Ref() const {
  absl::MutexLock lock(&mu_);
  return self_;
}

std::string CoordinatorClient::peer_id() const { return Ref().peer_id(); }

absl::StatusOr<cv1::JoinResponse> CoordinatorClient::Join(const JoinOptions& o, absl::Duration wait) {
  cv1::JoinRequest request;
  request.set_peer_id(Ref().peer_id());
  request.set_listen_address(o.listen_address);
  request.set_public_address(o.public_address);
  request.set_client_only(o.client_only);
  request.set_display_name(o.display_name);
  if (token_ != nullptr) request.set_peer_token(token_->peer_credential());
  const absl::Time give_up = absl::Now() + std::max(wait, absl::Seconds(5));
  cv1::JoinResponse response;
  for (;;) {
    auto context = MakeCallContext(give_up - absl::Now(), /*wait_for_ready=*/true);
    if (token_ != nullptr && !token_->run_token().empty()) {
      // Joining is what the run token is for; the credential, if any, is
      // the proof of identity in the request.
      context->AddMetadata("authorization", "Bearer " + token_->run_token());
    }
    grpc::Status s = stub_->Join(context.get(), request, &response);
    if (s.ok()) break;
    if (s.error_code() != grpc::StatusCode::ALREADY_EXISTS || absl::Now() + absl::Seconds(2) > give_up) {
      return FromGrpcStatus(s);
    }
    LOG(INFO) << "join: " << s.error_message() << "; retrying";
    absl::SleepFor(absl::Seconds(2));
  }
  if (token_ != nullptr && !response.peer_token().empty()) {
    token_->SetPeerCredential(response.peer_token());
  }
  absl::MutexLock lock(&mu_);
  self_.set_peer_id(response.peer_id());
  self_.set_incarnation(response.incarnation());
  return response;
}

absl::Status CoordinatorClient::Heartbeat(double samples_per_second) {
  cv1::HeartbeatRequest request;
  *request.mutable_peer() = Ref();
  request.set_samples_per_second(samples_per_second);
  cv1::HeartbeatResponse response;
  auto context = MakeCallContext(absl::Seconds(10));
  grpc::Status s = stub_->Heartbeat(context.get(), request, &response);
  if (!s.ok()) return FromGrpcStatus(s);
  if (token_ != nullptr && !response.peer_token().empty()) {
    token_->SetPeerCredential(response.peer_token());
  }
  return absl::OkStatus();
}

absl::Status CoordinatorClient::Leave() {
  cv1::LeaveRequest request;
  *request.mutable_peer() = Ref();
  cv1::LeaveResponse response;
  auto context = MakeCallContext(absl::Seconds(10));
  return FromGrpcStatus(stub_->Leave(context.get(), request, &response));
}

absl::StatusOr<std::vector<cv1::Lease>> CoordinatorClient::Acquire(uint32_t max_chunks) {
  cv1::AcquireChunksRequest request;
  *request.mutable_peer() = Ref();
  request.set_max_chunks(max_chunks);
  cv1::AcquireChunksResponse response;
  auto context = MakeCallContext();
  grpc::Status s = stub_->AcquireChunks(context.get(), request, &response);
  if (!s.ok()) return FromGrpcStatus(s);
  return std::vector<cv1::Lease>(response.leases().begin(), response.leases().end());
}

absl::StatusOr<std::vector<cv1::Lease>> CoordinatorClient::Renew(const std::vector<uint64_t>& ids,
                                                                 std::vector<uint64_t>* lost) {
  cv1::RenewLeasesRequest request;
  *request.mutable_peer() = Ref();
  for (uint64_t id : ids) request.add_lease_ids(id);
  cv1::RenewLeasesResponse response;
  auto context = MakeCallContext();
  grpc::Status s = stub_->RenewLeases(context.get(), request, &response);
  if (!s.ok()) return FromGrpcStatus(s);
  if (lost != nullptr) lost->assign(response.lost().begin(), response.lost().end());
  return std::vector<cv1::Lease>(response.renewed().begin(), response.renewed().end());
}

absl::StatusOr<cv1::CompleteChunkResponse> CoordinatorClient::Complete(uint64_t chunk_id,
                                                                       uint64_t lease_id,
                                                                       uint32_t samples) {
  cv1::CompleteChunkRequest request;
  *request.mutable_peer() = Ref();
  request.set_chunk_id(chunk_id);
  request.set_lease_id(lease_id);
  request.set_samples_trained(samples);
  const absl::Time give_up = absl::Now() + kCompleteRetryFor;
  for (;;) {
    cv1::CompleteChunkResponse response;
    auto context = MakeCallContext(absl::Seconds(30), /*wait_for_ready=*/true);
    grpc::Status s = stub_->CompleteChunk(context.get(), request, &response);
    if (s.ok()) return response;
    const bool unanswered = s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                            s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
    if (!unanswered || absl::Now() >= give_up) return FromGrpcStatus(s);
    LOG(WARNING) << "completing chunk " << chunk_id << ": " << s.error_message()
                 << "; trying again";
    absl::SleepFor(absl::Seconds(1));
  }
}

absl::Status CoordinatorClient::Release(const std::vector<uint64_t>& ids) {
  if (ids.empty()) return absl::OkStatus();
  cv1::ReleaseChunksRequest request;
  *request.mutable_peer() = Ref();
  for (uint64_t id : ids) request.add_lease_ids(id);
  cv1::ReleaseChunksResponse response;
  auto context = MakeCallContext();
  return FromGrpcStatus(stub_->ReleaseChunks(context.get(), request, &response));
}

absl::StatusOr<cv1::ReportProgressResponse> CoordinatorClient::Report(
    cv1::ReportProgressRequest request) {
  *request.mutable_peer() = Ref();
  cv1::ReportProgressResponse response;
  auto context = MakeCallContext(absl::Seconds(10));
  grpc::Status s = stub_->ReportProgress(context.get(), request, &response);
  if (!s.ok()) return FromGrpcStatus(s);
  return response;
}

absl::StatusOr<std::optional<cv1::Round>> CoordinatorClient::GetRound(uint64_t after_round_id) {
  cv1::GetRoundRequest request;
  *request.mutable_peer() = Ref();
  request.set_after_round_id(after_round_id);
  cv1::GetRoundResponse response;
  auto context = MakeCallContext(absl::Seconds(10));
  grpc::Status s = stub_->GetRound(context.get(), request, &response);
  if (!s.ok()) return FromGrpcStatus(s);
  if (!response.found()) return std::optional<cv1::Round>();
  return std::optional<cv1::Round>(response.round());
}

absl::StatusOr<cv1::ReportAuditsResponse> CoordinatorClient::ReportAudits(
    uint64_t round_id, const std::vector<cv1::AuditReport>& reports) {
  cv1::ReportAuditsRequest request;
  *request.mutable_peer() = Ref();
  request.set_round_id(round_id);
  for (const auto& r : reports) *request.add_reports() = r;
  cv1::ReportAuditsResponse response;
  auto context = MakeCallContext(absl::Seconds(10));
  grpc::Status s = stub_->ReportAudits(context.get(), request, &response);
  if (!s.ok()) return FromGrpcStatus(s);
  return response;
}

absl::StatusOr<cv1::GetStepHashResponse> CoordinatorClient::GetStepHash(uint64_t step) {
  cv1::GetStepHashRequest request;
  request.set_step(step);
  cv1::GetStepHashResponse response;
  auto context = MakeCallContext(absl::Seconds(10));
  grpc::Status s = stub_->GetStepHash(context.get(), request, &response);
  if (!s.ok()) return FromGrpcStatus(s);
  return response;
}

absl::StatusOr<bool> CoordinatorClient::UploadSample(uint64_t step, std::string png) {
  cv1::UploadSampleRequest request;
  *request.mutable_peer() = Ref();
  request.set_step(step);
  request.set_png(std::move(png));
  cv1::UploadSampleResponse response;
  auto context = MakeCallContext(absl::Seconds(30));
  grpc::Status s = stub_->UploadSample(context.get(), request, &response);
  if (!s.ok()) return FromGrpcStatus(s);
  return response.kept();
}

absl::StatusOr<cv1::RunState> CoordinatorClient::GetRunState() {
  cv1::GetRunStateRequest request;
  cv1::RunState response;
  auto context = MakeCallContext(absl::Seconds(10));
  grpc::Status s = stub_->GetRunState(context.get(), request, &response);
  if (!s.ok()) return FromGrpcStatus(s);
  return response;
}

absl::StatusOr<std::vector<cv1::PeerEntry>> CoordinatorClient::ListPeers() {
  cv1::ListPeersRequest request;
  cv1::ListPeersResponse response;
  auto context = MakeCallContext(absl::Seconds(10));
  grpc::Status s = stub_->ListPeers(context.get(), request, &response);
  if (!s.ok()) return FromGrpcStatus(s);
  return std::vector<cv1::PeerEntry>(response.peers().begin(), response.peers().end());
}

}  // namespace dd::collab
