// The coordinator over real loopback gRPC: a RocksDB ledger, real health
// probes of real peer servers, the token on every call, admin metadata,
// reflection.
#include "services/coordinator/coordinator_service.h"

#include <filesystem>

#include "common/rpc/auth.h"
#include "common/rpc/channel.h"
#include "common/rpc/reflection_client.h"
#include "common/rpc/server.h"
#include "gtest/gtest.h"
#include "protos/coordinator.grpc.pb.h"

namespace dd::coordinator {
namespace {

constexpr char kToken[] = "coordinator-test-token-012345";
constexpr char kAdmin[] = "coordinator-admin-token-0123";

class CoordinatorServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string db = std::string(std::getenv("TEST_TMPDIR")) + "/ledger";
    std::filesystem::remove_all(db);
    auto store = OpenRocksDbKvStore(db);
    ASSERT_TRUE(store.ok());
    auto ledger = ChunkLedger::Open(std::move(*store), {"svc-run", "m", {4, 4, 4}}, RealClock());
    ASSERT_TRUE(ledger.ok());
    ledger_ = std::move(*ledger);
    prober_ = std::make_unique<GrpcHealthProber>(SecurityConfig{}, absl::Seconds(2));
    liveness_ = std::make_unique<PeerLiveness>(ledger_.get(), prober_.get(), RealClock(),
                                               LivenessOptions{});
    CoordinatorOptions options;
    options.admin_token = kAdmin;
    rounds_ = std::make_unique<RoundPlanner>(RoundPlannerOptions{}, RealClock());
    issuer_ = *CredentialIssuer::Generate();
    core_ = std::make_unique<CoordinatorCore>(ledger_.get(), liveness_.get(), rounds_.get(),
                                              RunConfig{"svc-run", "{}"}, options, RealClock(),
                                              issuer_.get());
    service_ = std::make_unique<CoordinatorService>(core_.get());
    ServerOptions server;
    server.listen_address = "127.0.0.1:0";
    server.security.auth_token = kToken;
    server.security.peer_verifier = std::make_shared<PeerVerifierSlot>();
    server.security.peer_verifier->Set(*CredentialVerifier::FromPublicKey(issuer_->public_key()));
    auto host = ServiceHost::Start(server, {service_.get()});
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
    host_->SetServing(true);
    stub_ = Stub(kToken);
  }

  void TearDown() override {
    host_->Shutdown(absl::Seconds(1));
    liveness_->WaitForProbesForTest();
  }

  std::unique_ptr<v1::Coordinator::Stub> Stub(const std::string& token) {
    SecurityConfig c;
    c.auth_token = token;
    auto ch = MakeChannel("127.0.0.1:" + std::to_string(host_->port()), c);
    return v1::Coordinator::NewStub(*ch);
  }

  // A stub that calls with the credential `joined` carries.
  std::unique_ptr<v1::Coordinator::Stub> PeerStub(const v1::JoinResponse& joined) {
    SecurityConfig c;
    c.call_token = std::make_shared<CallToken>(kToken);
    c.call_token->SetPeerCredential(joined.peer_token());
    return v1::Coordinator::NewStub(
        *MakeChannel("127.0.0.1:" + std::to_string(host_->port()), c));
  }

  // A peer's own server: health only, like a trainer's averaging server.
  std::unique_ptr<ServiceHost> StartPeerServer() {
    ServerOptions o;
    o.listen_address = "127.0.0.1:0";
    o.security.auth_token = "peer-token-0123456789abcdef";
    auto h = ServiceHost::Start(o, {});
    EXPECT_TRUE(h.ok());
    (*h)->SetServing(true);
    return std::move(*h);
  }

  v1::JoinResponse Join(const std::string& address) {
    grpc::ClientContext ctx;
    v1::JoinRequest req;
    req.set_listen_address(address);
    v1::JoinResponse resp;
    EXPECT_TRUE(stub_->Join(&ctx, req, &resp).ok());
    return resp;
  }

  std::map<std::string, v1::PeerEntry> PeersWhenProbed() {
    liveness_->WaitForProbesForTest();
    grpc::ClientContext ctx;
    v1::ListPeersResponse resp;
    EXPECT_TRUE(stub_->ListPeers(&ctx, {}, &resp).ok());
    std::map<std::string, v1::PeerEntry> out;
    for (const auto& p : resp.peers()) out[p.peer_id()] = p;
    return out;
  }

  std::unique_ptr<CredentialIssuer> issuer_;
  std::unique_ptr<ChunkLedger> ledger_;
  std::unique_ptr<GrpcHealthProber> prober_;
  std::unique_ptr<PeerLiveness> liveness_;
  std::unique_ptr<RoundPlanner> rounds_;
  std::unique_ptr<CoordinatorCore> core_;
  std::unique_ptr<CoordinatorService> service_;
  std::unique_ptr<ServiceHost> host_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

TEST_F(CoordinatorServiceTest, LiveAddressIsListedDeadAddressIsNot) {
  auto peer_server = StartPeerServer();
  std::string live = "127.0.0.1:" + std::to_string(peer_server->port());
  // A port nobody listens on: bind a server, note its port, stop it.
  auto gone = StartPeerServer();
  std::string dead = "127.0.0.1:" + std::to_string(gone->port());
  gone->Shutdown(absl::ZeroDuration());
  gone.reset();

  v1::JoinResponse a = Join(live);
  v1::JoinResponse b = Join(dead);
  auto peers = PeersWhenProbed();
  EXPECT_EQ(peers[a.peer_id()].reachability(), v1::REACHABLE);
  EXPECT_EQ(peers[a.peer_id()].address(), live);
  EXPECT_EQ(peers[b.peer_id()].reachability(), v1::UNREACHABLE);
  EXPECT_EQ(peers[b.peer_id()].address(), "");
}

TEST_F(CoordinatorServiceTest, LeaseCompleteAndStateOverTheWire) {
  v1::JoinResponse a = Join("127.0.0.1:9");
  ASSERT_FALSE(a.peer_token().empty());
  EXPECT_EQ(a.credential_public_key(), issuer_->public_key());
  auto peer = PeerStub(a);
  v1::PeerRef ref;
  ref.set_peer_id(a.peer_id());
  ref.set_incarnation(a.incarnation());
  grpc::ClientContext c1;
  v1::AcquireChunksRequest acq;
  *acq.mutable_peer() = ref;
  acq.set_max_chunks(2);
  v1::AcquireChunksResponse leases;
  // The run token acts for no peer.
  grpc::ClientContext c0;
  EXPECT_EQ(stub_->AcquireChunks(&c0, acq, &leases).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_TRUE(peer->AcquireChunks(&c1, acq, &leases).ok());
  ASSERT_EQ(leases.leases_size(), 2);
  grpc::ClientContext c2;
  v1::CompleteChunkRequest done;
  *done.mutable_peer() = ref;
  done.set_chunk_id(leases.leases(0).chunk_id());
  done.set_lease_id(leases.leases(0).lease_id());
  done.set_samples_trained(4);
  v1::CompleteChunkResponse dr;
  ASSERT_TRUE(peer->CompleteChunk(&c2, done, &dr).ok());
  grpc::ClientContext c3;
  v1::RunState state;
  ASSERT_TRUE(stub_->GetRunState(&c3, {}, &state).ok());
  EXPECT_EQ(state.run_id(), "svc-run");
  EXPECT_EQ(state.chunks_leased(), 1u);
  EXPECT_EQ(state.chunks_done(), 1u);
  EXPECT_EQ(state.samples_done(), 4u);
  // Completing a lease it does not hold: FAILED_PRECONDITION on the wire.
  grpc::ClientContext c4;
  done.set_lease_id(999);
  EXPECT_EQ(peer->CompleteChunk(&c4, done, &dr).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(CoordinatorServiceTest, ACredentialActsForItsOwnPeerOnly) {
  v1::JoinResponse victim = Join("127.0.0.1:9");
  v1::JoinResponse attacker = Join("127.0.0.1:10");
  auto as_attacker = PeerStub(attacker);
  v1::PeerRef victim_ref;
  victim_ref.set_peer_id(victim.peer_id());
  victim_ref.set_incarnation(victim.incarnation());

  grpc::ClientContext c1;
  v1::LeaveRequest leave;
  *leave.mutable_peer() = victim_ref;
  v1::LeaveResponse left;
  EXPECT_EQ(as_attacker->Leave(&c1, leave, &left).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);

  // Joining as the victim: neither the attacker's credential nor the run
  // token without the victim's credential will do.
  grpc::ClientContext c2;
  v1::JoinRequest join;
  join.set_peer_id(victim.peer_id());
  join.set_listen_address("127.0.0.1:11");
  v1::JoinResponse joined;
  EXPECT_EQ(as_attacker->Join(&c2, join, &joined).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  grpc::ClientContext c3;
  join.set_peer_token(attacker.peer_token());
  EXPECT_EQ(stub_->Join(&c3, join, &joined).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // With its own credential as proof, the victim's restart does rejoin.
  grpc::ClientContext c4;
  join.set_peer_token(victim.peer_token());
  ASSERT_TRUE(stub_->Join(&c4, join, &joined).ok());
  EXPECT_EQ(joined.peer_id(), victim.peer_id());
  EXPECT_EQ(joined.incarnation(), victim.incarnation() + 1);

  // Heartbeats renew the credential; an empty `peer` means "the caller".
  grpc::ClientContext c5;
  v1::HeartbeatResponse beat;
  ASSERT_TRUE(as_attacker->Heartbeat(&c5, v1::HeartbeatRequest(), &beat).ok());
  EXPECT_FALSE(beat.peer_token().empty());
  EXPECT_GT(beat.peer_token_expires_unix_ms(), 0);

  // Without the admin token, listings hold no incarnations.
  grpc::ClientContext c6;
  v1::ListPeersResponse peers;
  ASSERT_TRUE(stub_->ListPeers(&c6, {}, &peers).ok());
  ASSERT_EQ(peers.peers_size(), 2);
  for (const auto& p : peers.peers()) EXPECT_EQ(p.incarnation(), 0u);
  grpc::ClientContext c7;
  c7.AddMetadata(kAdminTokenHeader, kAdmin);
  ASSERT_TRUE(stub_->ListPeers(&c7, {}, &peers).ok());
  for (const auto& p : peers.peers()) EXPECT_GT(p.incarnation(), 0u);
}

TEST_F(CoordinatorServiceTest, TokenOnEveryCallAdminTokenOnAdminCalls) {
  auto no_token = Stub("");
  grpc::ClientContext c1;
  v1::RunState state;
  EXPECT_EQ(no_token->GetRunState(&c1, {}, &state).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  auto wrong = Stub("wrong-token-0123456789abcdef");
  grpc::ClientContext c2;
  EXPECT_EQ(wrong->GetRunState(&c2, {}, &state).error_code(), grpc::StatusCode::UNAUTHENTICATED);

  v1::AdminReleaseChunkRequest req;
  req.set_chunk_id(0);
  v1::AdminReleaseChunkResponse resp;
  grpc::ClientContext c3;
  EXPECT_EQ(stub_->AdminReleaseChunk(&c3, req, &resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  grpc::ClientContext c4;
  c4.AddMetadata(kAdminTokenHeader, kAdmin);
  EXPECT_TRUE(stub_->AdminReleaseChunk(&c4, req, &resp).ok());

  SecurityConfig c;
  c.auth_token = kToken;
  auto names = ListServicesByReflection(
      *MakeChannel("127.0.0.1:" + std::to_string(host_->port()), c));
  ASSERT_TRUE(names.ok());
  EXPECT_NE(std::find(names->begin(), names->end(), "distdiff.coordinator.v1.Coordinator"),
            names->end());
}

}  // namespace
}  // namespace dd::coordinator
