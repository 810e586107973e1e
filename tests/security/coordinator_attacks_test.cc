// Attacks on the coordinator by a process that holds the run token, as the
// issue's review tried them, against real coordinator and dataset server
// processes over real gRPC. Each test is the attacker's move, then a check
// that it failed and that the victim peer goes on working.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include <grpcpp/create_channel.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/rpc/auth.h"
#include "common/rpc/channel.h"
#include "common/rpc/server.h"
#include "gtest/gtest.h"
#include "protos/coordinator.grpc.pb.h"
#include "services/coordinator/coordinator_service.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/test_servers.h"

namespace dd {
namespace {

namespace v1 = distdiff::coordinator::v1;
using testing::Subprocess;

constexpr char kToken[] = "security-test-run-token-0123456789";
constexpr char kAdmin[] = "security-test-admin-token-0123456";

// One process's view of the coordinator: the run token, or a credential.
struct Client {
  std::unique_ptr<v1::Coordinator::Stub> stub;
  v1::JoinResponse joined;  // when it joined
  v1::PeerRef ref;
};

class CoordinatorAttacks : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(std::string(std::getenv("TEST_TMPDIR")) + "/attacks");
    const std::string& dir = *dir_;
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/token") << kToken;
    std::ofstream(dir + "/admin") << kAdmin;
    std::ofstream(dir + "/run.json")
        << R"({"run_id": "attacks", "model": "tiny", "target_batch_size": 16})";
    ASSERT_TRUE(testing::MakeShapesDataset(dir, 64).ok());
    auto ds = testing::StartDatasetServer(dir, {"--chunk_size=4"});
    ASSERT_TRUE(ds.ok()) << ds.status();
    dataset_ = new Subprocess(std::move(ds->process));
    dataset_address_ = new std::string(ds->address);
    auto co = testing::StartCoordinator(
        dir, ds->address, {"--heartbeat_ttl=60s", "--admin_token_file=" + dir + "/admin"});
    ASSERT_TRUE(co.ok()) << co.status();
    coordinator_ = new Subprocess(std::move(co->process));
    address_ = new std::string(co->address);
  }

  static void TearDownTestSuite() {
    delete coordinator_;
    delete dataset_;
    delete dataset_address_;
    delete address_;
    delete dir_;
  }

  // A stub for the coordinator at `coordinator` (default: the suite's).
  static std::unique_ptr<v1::Coordinator::Stub> StubWith(const std::string& credential,
                                                         const std::string& coordinator = "") {
    SecurityConfig c;
    c.auth_token = kToken;
    c.call_token = std::make_shared<CallToken>(kToken);
    c.call_token->SetPeerCredential(credential);
    return v1::Coordinator::NewStub(
        *MakeChannel(coordinator.empty() ? *address_ : coordinator, c));
  }

  // A coordinator of its own (over the suite's dataset server) in
  // `dir_`/`name`, with the suite's token and run, and `flags`.
  static absl::StatusOr<testing::RunningServer> StartOwnCoordinator(
      const std::string& name, const std::vector<std::string>& flags) {
    const std::string dir = *dir_ + "/" + name;
    std::filesystem::create_directories(dir);
    for (const char* f : {"/token", "/run.json"}) {
      std::filesystem::copy_file(*dir_ + f, dir + f);
    }
    return testing::StartCoordinator(dir, *dataset_address_, flags);
  }

  // A process with the run token only.
  static Client RunTokenHolder(const std::string& coordinator = "") {
    return Client{StubWith("", coordinator), {}, {}};
  }

  // A peer that joined at `address` and calls with its credential.
  static Client JoinedPeer(const std::string& address, const std::string& coordinator = "") {
    Client run = RunTokenHolder(coordinator);
    v1::JoinRequest req;
    req.set_listen_address(address);
    v1::JoinResponse resp;
    auto ctx = MakeCallContext(absl::Seconds(30), true);
    grpc::Status s = run.stub->Join(ctx.get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    Client peer{StubWith(resp.peer_token(), coordinator), resp, {}};
    peer.ref.set_peer_id(resp.peer_id());
    peer.ref.set_incarnation(resp.incarnation());
    return peer;
  }

  static std::string* dir_;
  static std::string* address_;
  static std::string* dataset_address_;
  static Subprocess* dataset_;
  static Subprocess* coordinator_;
};

std::string* CoordinatorAttacks::dir_ = nullptr;
std::string* CoordinatorAttacks::address_ = nullptr;
std::string* CoordinatorAttacks::dataset_address_ = nullptr;
Subprocess* CoordinatorAttacks::dataset_ = nullptr;
Subprocess* CoordinatorAttacks::coordinator_ = nullptr;

template <typename Method, typename Request, typename Response>
grpc::StatusCode Call(const Client& c, Method method, const Request& req, Response* resp) {
  auto ctx = MakeCallContext(absl::Seconds(10));
  return ((*c.stub).*method)(ctx.get(), req, resp).error_code();
}

// Every peer RPC, named for `victim`, sent by `attacker`: each must fail
// with PERMISSION_DENIED.
void ExpectEveryPeerRpcRefused(const Client& attacker, const v1::PeerRef& victim,
                               uint64_t victim_lease, uint64_t victim_chunk) {
  using S = v1::Coordinator::Stub;
  const auto denied = grpc::StatusCode::PERMISSION_DENIED;
  v1::HeartbeatRequest hb;
  *hb.mutable_peer() = victim;
  v1::HeartbeatResponse hbr;
  EXPECT_EQ(Call(attacker, &S::Heartbeat, hb, &hbr), denied);
  v1::AcquireChunksRequest acq;
  *acq.mutable_peer() = victim;
  acq.set_max_chunks(1);
  v1::AcquireChunksResponse acqr;
  EXPECT_EQ(Call(attacker, &S::AcquireChunks, acq, &acqr), denied);
  v1::RenewLeasesRequest renew;
  *renew.mutable_peer() = victim;
  renew.add_lease_ids(victim_lease);
  v1::RenewLeasesResponse renewr;
  EXPECT_EQ(Call(attacker, &S::RenewLeases, renew, &renewr), denied);
  v1::CompleteChunkRequest complete;
  *complete.mutable_peer() = victim;
  complete.set_chunk_id(victim_chunk);
  complete.set_lease_id(victim_lease);
  complete.set_samples_trained(1);
  v1::CompleteChunkResponse completer;
  EXPECT_EQ(Call(attacker, &S::CompleteChunk, complete, &completer), denied);
  v1::ReleaseChunksRequest release;
  *release.mutable_peer() = victim;
  release.add_lease_ids(victim_lease);
  v1::ReleaseChunksResponse releaser;
  EXPECT_EQ(Call(attacker, &S::ReleaseChunks, release, &releaser), denied);
  v1::ReportProgressRequest report;
  *report.mutable_peer() = victim;
  v1::ReportProgressResponse reportr;
  EXPECT_EQ(Call(attacker, &S::ReportProgress, report, &reportr), denied);
  v1::GetRoundRequest round;
  *round.mutable_peer() = victim;
  v1::GetRoundResponse roundr;
  EXPECT_EQ(Call(attacker, &S::GetRound, round, &roundr), denied);
  v1::LeaveRequest leave;
  *leave.mutable_peer() = victim;
  v1::LeaveResponse leaver;
  EXPECT_EQ(Call(attacker, &S::Leave, leave, &leaver), denied);
}

TEST_F(CoordinatorAttacks, NoOneActsAsAnotherPeerOnAnyPeerRpc) {
  Client victim = JoinedPeer("127.0.0.1:40001");
  v1::AcquireChunksRequest acq;
  acq.set_max_chunks(1);  // `peer` left empty: the credential says who
  v1::AcquireChunksResponse leases;
  ASSERT_EQ(Call(victim, &v1::Coordinator::Stub::AcquireChunks, acq, &leases),
            grpc::StatusCode::OK);
  ASSERT_EQ(leases.leases_size(), 1);
  const v1::Lease lease = leases.leases(0);

  // The listing no longer hands out what the attacks need.
  Client snoop = RunTokenHolder();
  v1::ListChunksRequest list;
  list.set_state(v1::LEASED);
  v1::ListChunksResponse listed;
  ASSERT_EQ(Call(snoop, &v1::Coordinator::Stub::ListChunks, list, &listed), grpc::StatusCode::OK);
  ASSERT_GE(listed.chunks_size(), 1);
  for (const auto& c : listed.chunks()) {
    EXPECT_EQ(c.lease_id(), 0u);
    EXPECT_EQ(c.owner_incarnation(), 0u);
  }

  // Another peer's credential, then the bare run token, on every peer RPC
  // (the attacker knows the ids: the test hands them over).
  Client attacker = JoinedPeer("127.0.0.1:40002");
  ExpectEveryPeerRpcRefused(attacker, victim.ref, lease.lease_id(), lease.chunk_id());
  ExpectEveryPeerRpcRefused(snoop, victim.ref, lease.lease_id(), lease.chunk_id());

  // The victim's lease is intact and its completion counts.
  v1::CompleteChunkRequest complete;
  complete.set_chunk_id(lease.chunk_id());
  complete.set_lease_id(lease.lease_id());
  complete.set_samples_trained(lease.num_samples());
  v1::CompleteChunkResponse done;
  ASSERT_EQ(Call(victim, &v1::Coordinator::Stub::CompleteChunk, complete, &done),
            grpc::StatusCode::OK);
  EXPECT_FALSE(done.duplicate());
  v1::HeartbeatResponse beat;
  EXPECT_EQ(Call(victim, &v1::Coordinator::Stub::Heartbeat, v1::HeartbeatRequest(), &beat),
            grpc::StatusCode::OK);
}

TEST_F(CoordinatorAttacks, JoiningAsAnotherPeerOrAtItsAddressFails) {
  Client victim = JoinedPeer("127.0.0.1:40011");
  Client attacker = JoinedPeer("127.0.0.1:40012");
  v1::JoinRequest as_victim;
  as_victim.set_peer_id(victim.joined.peer_id());
  as_victim.set_listen_address("127.0.0.1:40013");
  v1::JoinResponse resp;
  // With the run token alone, with its own credential in the header, with
  // its own credential offered as proof: all refused.
  Client run = RunTokenHolder();
  EXPECT_EQ(Call(run, &v1::Coordinator::Stub::Join, as_victim, &resp),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Call(attacker, &v1::Coordinator::Stub::Join, as_victim, &resp),
            grpc::StatusCode::PERMISSION_DENIED);
  as_victim.set_peer_token(attacker.joined.peer_token());
  EXPECT_EQ(Call(run, &v1::Coordinator::Stub::Join, as_victim, &resp),
            grpc::StatusCode::PERMISSION_DENIED);

  // Naming the victim's address while the victim is alive (it joined a
  // moment ago): refused, the victim stays registered.
  v1::JoinRequest at_address;
  at_address.set_listen_address("127.0.0.1:40011");
  EXPECT_EQ(Call(run, &v1::Coordinator::Stub::Join, at_address, &resp),
            grpc::StatusCode::ALREADY_EXISTS);
  v1::HeartbeatResponse beat;
  EXPECT_EQ(Call(victim, &v1::Coordinator::Stub::Heartbeat, v1::HeartbeatRequest(), &beat),
            grpc::StatusCode::OK);
}

TEST_F(CoordinatorAttacks, TheCoordinatorProbesNoAddressButTheCallers) {
  // Joining "at" another host's service would make the coordinator probe it
  // and report the answer in ListPeers.
  Client run = RunTokenHolder();
  v1::JoinRequest req;
  req.set_listen_address("198.18.0.9:22");
  v1::JoinResponse resp;
  EXPECT_EQ(Call(run, &v1::Coordinator::Stub::Join, req, &resp),
            grpc::StatusCode::PERMISSION_DENIED);
  req.set_listen_address("127.0.0.1:40051");
  req.set_public_address("[2001:db8::9]:443");
  EXPECT_EQ(Call(run, &v1::Coordinator::Stub::Join, req, &resp),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(CoordinatorAttacks, AnEvictedPeerIsBannedAndItsCredentialIsVoid) {
  Client attacker = JoinedPeer("127.0.0.1:40021");
  Client admin = RunTokenHolder();
  v1::AdminEvictPeerRequest evict;
  evict.set_peer_id(attacker.joined.peer_id());
  v1::AdminEvictPeerResponse evicted;
  {
    auto ctx = MakeCallContext(absl::Seconds(10));
    ctx->AddMetadata(coordinator::kAdminTokenHeader, kAdmin);
    grpc::Status s = admin.stub->AdminEvictPeer(ctx.get(), evict, &evicted);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  // The old credential no longer acts (its incarnation is gone) ...
  v1::HeartbeatResponse beat;
  EXPECT_EQ(Call(attacker, &v1::Coordinator::Stub::Heartbeat, v1::HeartbeatRequest(), &beat),
            grpc::StatusCode::NOT_FOUND);
  // ... and rejoining under the banned id is refused, with proof or without.
  v1::JoinRequest rejoin;
  rejoin.set_peer_id(attacker.joined.peer_id());
  rejoin.set_listen_address("127.0.0.1:40021");
  rejoin.set_peer_token(attacker.joined.peer_token());
  v1::JoinResponse resp;
  EXPECT_EQ(Call(RunTokenHolder(), &v1::Coordinator::Stub::Join, rejoin, &resp),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Call(attacker, &v1::Coordinator::Stub::Join, rejoin, &resp),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(CoordinatorAttacks, ReportedSamplesAreBoundedByThePeersData) {
  Client attacker = JoinedPeer("127.0.0.1:40031");
  v1::RunState state;
  ASSERT_EQ(Call(attacker, &v1::Coordinator::Stub::GetRunState, v1::GetRunStateRequest(), &state),
            grpc::StatusCode::OK);
  // Without leases, the whole target batch in one report: refused, so no
  // round opens and honest peers' reports stay current.
  v1::ReportProgressRequest report;
  report.set_global_step(state.global_step());
  report.set_samples_accumulated(1 << 20);
  v1::ReportProgressResponse resp;
  EXPECT_EQ(Call(attacker, &v1::Coordinator::Stub::ReportProgress, report, &resp),
            grpc::StatusCode::INVALID_ARGUMENT);
  // Within what it leased: accepted.
  v1::AcquireChunksRequest acq;
  acq.set_max_chunks(1);
  v1::AcquireChunksResponse leases;
  ASSERT_EQ(Call(attacker, &v1::Coordinator::Stub::AcquireChunks, acq, &leases),
            grpc::StatusCode::OK);
  ASSERT_EQ(leases.leases_size(), 1);
  report.set_samples_accumulated(leases.leases(0).num_samples());
  EXPECT_EQ(Call(attacker, &v1::Coordinator::Stub::ReportProgress, report, &resp),
            grpc::StatusCode::OK);
  v1::GetRunStateRequest after;
  ASSERT_EQ(Call(attacker, &v1::Coordinator::Stub::GetRunState, after, &state),
            grpc::StatusCode::OK);
  EXPECT_EQ(state.global_step(), 0u);  // 4 samples do not reach the target of 16
}

TEST_F(CoordinatorAttacks, AnInvitationJoinsOnceAndIsBannedWithItsPeer) {
  auto invite = [&](const std::string& name) {
    Client admin = RunTokenHolder();
    v1::AdminInviteRequest req;
    req.set_name(name);
    v1::AdminInviteResponse resp;
    auto ctx = MakeCallContext(absl::Seconds(10));
    ctx->AddMetadata(coordinator::kAdminTokenHeader, kAdmin);
    grpc::Status s = admin.stub->AdminInvite(ctx.get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.invitation();
  };
  // A volunteer holds an invitation instead of the run token.
  auto with_bearer = [&](const std::string& bearer) {
    SecurityConfig c;
    c.auth_token = bearer;
    return Client{v1::Coordinator::NewStub(*MakeChannel(*address_, c)), {}, {}};
  };
  // Only an admin invites.
  Client run = RunTokenHolder();
  v1::AdminInviteRequest req;
  req.set_name("mallory");
  v1::AdminInviteResponse resp;
  EXPECT_EQ(Call(run, &v1::Coordinator::Stub::AdminInvite, req, &resp),
            grpc::StatusCode::PERMISSION_DENIED);

  Client alice = with_bearer(invite("alice"));
  v1::JoinRequest join;
  join.set_listen_address("127.0.0.1:40061");
  v1::JoinResponse joined;
  ASSERT_EQ(Call(alice, &v1::Coordinator::Stub::Join, join, &joined), grpc::StatusCode::OK);
  // The invitation itself acts for no peer.
  v1::HeartbeatRequest beat;
  beat.mutable_peer()->set_peer_id(joined.peer_id());
  v1::HeartbeatResponse beaten;
  EXPECT_EQ(Call(alice, &v1::Coordinator::Stub::Heartbeat, beat, &beaten),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Call(Client{StubWith(joined.peer_token()), {}, {}}, &v1::Coordinator::Stub::Heartbeat,
                 v1::HeartbeatRequest(), &beaten),
            grpc::StatusCode::OK);

  // Evicting alice's peer bans her invitation: she cannot come back as a
  // new peer with it.
  {
    v1::AdminEvictPeerRequest evict;
    evict.set_peer_id(joined.peer_id());
    v1::AdminEvictPeerResponse evicted;
    auto ctx = MakeCallContext(absl::Seconds(10));
    ctx->AddMetadata(coordinator::kAdminTokenHeader, kAdmin);
    ASSERT_TRUE(run.stub->AdminEvictPeer(ctx.get(), evict, &evicted).ok());
  }
  join.set_listen_address("127.0.0.1:40062");
  EXPECT_EQ(Call(alice, &v1::Coordinator::Stub::Join, join, &joined),
            grpc::StatusCode::PERMISSION_DENIED);
  // Bob's invitation is unaffected.
  Client bob = with_bearer(invite("bob"));
  join.set_listen_address("127.0.0.1:40063");
  EXPECT_EQ(Call(bob, &v1::Coordinator::Stub::Join, join, &joined), grpc::StatusCode::OK);
}

TEST_F(CoordinatorAttacks, AForgedCredentialIsUnauthenticated) {
  // A credential signed by another key (a peer that made its own) and a
  // corrupted one.
  Client forged = Client{StubWith("ddp1.cGVlci0xCjEKYXR0YWNrcwo5OTk5OTk5OTk5OTk5.AAAA"), {}, {}};
  v1::RunState state;
  EXPECT_EQ(Call(forged, &v1::Coordinator::Stub::GetRunState, v1::GetRunStateRequest(), &state),
            grpc::StatusCode::UNAUTHENTICATED);
  Client peer = JoinedPeer("127.0.0.1:40041");
  std::string token = peer.joined.peer_token();
  token[token.size() / 2] = token[token.size() / 2] == 'A' ? 'B' : 'A';
  Client corrupted = Client{StubWith(token), {}, {}};
  EXPECT_EQ(Call(corrupted, &v1::Coordinator::Stub::GetRunState, v1::GetRunStateRequest(), &state),
            grpc::StatusCode::UNAUTHENTICATED);
  // Two bearer values (the run token to pass the check, a forged identity
  // after it): refused outright.
  auto raw = v1::Coordinator::NewStub(
      grpc::CreateChannel(*address_, grpc::InsecureChannelCredentials()));
  grpc::ClientContext two;
  two.AddMetadata("authorization", std::string("Bearer ") + kToken);
  two.AddMetadata("authorization", "Bearer " + peer.joined.peer_token());
  v1::HeartbeatResponse beat;
  EXPECT_EQ(raw->Heartbeat(&two, v1::HeartbeatRequest(), &beat).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

// A token holder floods Joins, each of which would otherwise add a peer
// record (and a probe). Its own coordinator, which limits loopback callers
// too (a real attacker calls from elsewhere; every process here is on
// loopback): a burst of 5, then one Join an hour.
TEST_F(CoordinatorAttacks, AJoinFloodIsRefusedAndTheJoinedPeerGoesOn) {
  auto co = StartOwnCoordinator(
      "flood", {"--limit_loopback_joins", "--join_burst=5", "--join_interval=1h"});
  ASSERT_TRUE(co.ok()) << co.status();
  Subprocess coordinator = std::move(co->process);

  Client honest = JoinedPeer("127.0.0.1:40061", co->address);  // one of the burst
  constexpr int kThreads = 8, kJoinsEach = 8;
  std::atomic<int> joined{0}, refused{0}, other{0};
  std::mutex mu;
  std::string refusal;
  std::vector<std::thread> flood;
  for (int t = 0; t < kThreads; ++t) {
    flood.emplace_back([&, t] {
      Client attacker = RunTokenHolder(co->address);
      for (int i = 0; i < kJoinsEach; ++i) {
        v1::JoinRequest req;
        req.set_listen_address("127.0.0.1:" + std::to_string(41000 + t * kJoinsEach + i));
        v1::JoinResponse resp;
        auto ctx = MakeCallContext(absl::Seconds(30), true);
        grpc::Status s = attacker.stub->Join(ctx.get(), req, &resp);
        if (s.ok()) {
          ++joined;
        } else if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
          ++refused;
          std::lock_guard<std::mutex> lock(mu);
          refusal = s.error_message();
        } else {
          ++other;
        }
      }
    });
  }
  for (auto& t : flood) t.join();
  EXPECT_EQ(joined.load(), 4);  // what the burst had left
  EXPECT_EQ(refused.load(), kThreads * kJoinsEach - 4);
  EXPECT_EQ(other.load(), 0);
  EXPECT_NE(refusal.find("too many joins from 127.0.0.1"), std::string::npos) << refusal;

  // The refused Joins left no peer record ...
  v1::ListPeersResponse peers;
  ASSERT_EQ(Call(honest, &v1::Coordinator::Stub::ListPeers, v1::ListPeersRequest(), &peers),
            grpc::StatusCode::OK);
  EXPECT_EQ(peers.peers_size(), 5);
  // ... and the peer that joined before the flood goes on working.
  v1::HeartbeatResponse beat;
  EXPECT_EQ(Call(honest, &v1::Coordinator::Stub::Heartbeat, v1::HeartbeatRequest(), &beat),
            grpc::StatusCode::OK);
  v1::AcquireChunksRequest acq;
  acq.set_max_chunks(1);
  v1::AcquireChunksResponse leases;
  ASSERT_EQ(Call(honest, &v1::Coordinator::Stub::AcquireChunks, acq, &leases),
            grpc::StatusCode::OK);
  EXPECT_EQ(leases.leases_size(), 1);
}

// The operator serves the admin calls on their own address (--admin_port).
// A token holder who also stole the admin token cannot use it on the run's
// public port: every Admin* call is refused there, and the listings stay
// reduced.
TEST_F(CoordinatorAttacks, AdminCallsAreRefusedOnThePublicPortWhenServedApart) {
  const std::string dir = *dir_ + "/admin_apart";
  auto co = StartOwnCoordinator("admin_apart", {"--admin_token_file=" + *dir_ + "/admin",
                                                "--admin_port=0",
                                                "--admin_port_file=" + dir + "/admin_port"});
  ASSERT_TRUE(co.ok()) << co.status();
  Subprocess coordinator = std::move(co->process);
  std::string admin_port;
  for (int i = 0; i < 100 && admin_port.empty(); ++i) {
    std::ifstream(dir + "/admin_port") >> admin_port;
    if (admin_port.empty()) absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_FALSE(admin_port.empty()) << "no admin port written";
  const std::string admin_address = "127.0.0.1:" + admin_port;

  Client victim = JoinedPeer("127.0.0.1:40071", co->address);
  auto with_admin_token = [] {
    auto ctx = MakeCallContext(absl::Seconds(10));
    ctx->AddMetadata(coordinator::kAdminTokenHeader, kAdmin);
    return ctx;
  };
  v1::AdminEvictPeerRequest evict;
  evict.set_peer_id(victim.joined.peer_id());
  v1::AdminEvictPeerResponse evicted;
  v1::ListPeersResponse peers;
  Client on_public = RunTokenHolder(co->address);
  {
    grpc::Status s = on_public.stub->AdminEvictPeer(with_admin_token().get(), evict, &evicted);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_NE(s.error_message().find("admin address"), std::string::npos) << s.error_message();
    v1::AdminInviteRequest invite;
    invite.set_name("x");
    v1::AdminInviteResponse invited;
    EXPECT_EQ(on_public.stub->AdminInvite(with_admin_token().get(), invite, &invited).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
    ASSERT_TRUE(
        on_public.stub->ListPeers(with_admin_token().get(), v1::ListPeersRequest(), &peers).ok());
    ASSERT_EQ(peers.peers_size(), 1);
    EXPECT_EQ(peers.peers(0).incarnation(), 0u) << "the public port revealed an incarnation";
  }
  // On the admin address the same calls work.
  Client on_admin = RunTokenHolder(admin_address);
  ASSERT_TRUE(
      on_admin.stub->ListPeers(with_admin_token().get(), v1::ListPeersRequest(), &peers).ok());
  ASSERT_EQ(peers.peers_size(), 1);
  EXPECT_EQ(peers.peers(0).incarnation(), victim.joined.incarnation());
  grpc::Status s = on_admin.stub->AdminEvictPeer(with_admin_token().get(), evict, &evicted);
  ASSERT_TRUE(s.ok()) << s.error_message();
  v1::HeartbeatResponse beat;
  EXPECT_EQ(Call(victim, &v1::Coordinator::Stub::Heartbeat, v1::HeartbeatRequest(), &beat),
            grpc::StatusCode::NOT_FOUND);
}

// Last in the suite: it opens a round on the shared coordinator.
// The attacker claims an absurd upload bandwidth to be given the whole
// vector to reduce. Both members answer the coordinator's probe (health
// servers here), so both get a span; the claim is clamped to within 4x of
// the members' median, so the honest member keeps a real share.
TEST_F(CoordinatorAttacks, ClaimedBandwidthCannotTakeTheRound) {
  ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.security.auth_token = kToken;
  std::vector<std::unique_ptr<ServiceHost>> hosts;
  std::vector<Client> peers;
  for (int i = 0; i < 2; ++i) {
    auto host = ServiceHost::Start(options, {});
    ASSERT_TRUE(host.ok()) << host.status();
    (*host)->SetServing(true);
    peers.push_back(JoinedPeer("127.0.0.1:" + std::to_string((*host)->port())));
    hosts.push_back(std::move(*host));
  }
  Client& attacker = peers[0];
  Client& honest = peers[1];
  // Both reachable before the round opens (the coordinator probes on join).
  for (int i = 0; i < 100; ++i) {
    v1::ListPeersResponse list;
    ASSERT_EQ(Call(honest, &v1::Coordinator::Stub::ListPeers, v1::ListPeersRequest(), &list),
              grpc::StatusCode::OK);
    int reachable = 0;
    for (const auto& p : list.peers()) {
      reachable += (p.peer_id() == attacker.joined.peer_id() || p.peer_id() == honest.joined.peer_id()) &&
                   p.reachability() == v1::REACHABLE;
    }
    if (reachable == 2) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  v1::RunState state;
  ASSERT_EQ(Call(honest, &v1::Coordinator::Stub::GetRunState, v1::GetRunStateRequest(), &state),
            grpc::StatusCode::OK);
  // Each leases two chunks (8 samples) and reports them: 16, the target.
  for (Client* c : {&attacker, &honest}) {
    v1::AcquireChunksRequest acq;
    acq.set_max_chunks(2);
    v1::AcquireChunksResponse leases;
    ASSERT_EQ(Call(*c, &v1::Coordinator::Stub::AcquireChunks, acq, &leases), grpc::StatusCode::OK);
    uint64_t samples = 0;
    for (const auto& l : leases.leases()) samples += l.num_samples();
    v1::ReportProgressRequest report;
    report.set_global_step(state.global_step());
    report.set_samples_accumulated(samples);
    report.set_samples_per_second(10);
    if (c == &attacker) report.set_bandwidth_mbps(1e12);  // honest trainers report theirs; 0: none
    else report.set_bandwidth_mbps(100);
    v1::ReportProgressResponse resp;
    ASSERT_EQ(Call(*c, &v1::Coordinator::Stub::ReportProgress, report, &resp), grpc::StatusCode::OK);
  }
  v1::GetRoundRequest get;
  v1::GetRoundResponse round;
  ASSERT_EQ(Call(honest, &v1::Coordinator::Stub::GetRound, get, &round), grpc::StatusCode::OK);
  ASSERT_TRUE(round.found()) << "no round opened at the target";
  double attacker_share = 0, honest_share = 0;
  for (const auto& m : round.round().members()) {
    if (m.peer_id() == attacker.joined.peer_id()) attacker_share = m.span_share();
    if (m.peer_id() == honest.joined.peer_id()) honest_share = m.span_share();
  }
  EXPECT_GT(honest_share, 0.0);
  EXPECT_LE(attacker_share, 4.0 * honest_share + 1e-9)
      << "the attacker's claim took " << attacker_share << " against " << honest_share;
  for (auto& h : hosts) h->Shutdown(absl::Seconds(1));
}

}  // namespace
}  // namespace dd
