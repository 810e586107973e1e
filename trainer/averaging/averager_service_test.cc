// AveragerService on a real loopback gRPC server, driven by a raw client:
// parts that arrive before their round is registered are held and served
// when it registers, and refused (NOT_FOUND) when it never does or when
// holding them would pass the memory bound.
#include "trainer/averaging/averager_service.h"

#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/rpc/channel.h"
#include "common/rpc/server.h"
#include "common/rpc/testing/test_run_credentials.h"
#include "gtest/gtest.h"

namespace dd::averaging {
namespace {

constexpr char kToken[] = "averager-service-test-token-0123";
constexpr uint32_t kCount = 1000;

const testing::TestRunCredentials& Credentials() {
  static const auto* credentials = new testing::TestRunCredentials(kToken);
  return *credentials;
}

SecurityConfig Security() { return Credentials().Server(); }

struct Server {
  explicit Server(absl::Duration early_part_wait, size_t max_held_bytes = size_t{64} << 20)
      : service(early_part_wait, max_held_bytes) {
    ServerOptions o;
    o.listen_address = "127.0.0.1:0";
    o.security = Security();
    auto started = ServiceHost::Start(o, {&service});
    EXPECT_TRUE(started.ok()) << started.status();
    host = std::move(*started);
    host->SetServing(true);
  }
  AveragerService service;
  std::unique_ptr<ServiceHost> host;
};

// Member 1 of a two-member round sends its part of member 0's span.
// `client` is whose credential the call carries (peer-1's by default).
grpc::Status SendPart(const Server& server, uint64_t round_id, float value,
                      v1::ReducePartResponse* response, double weight = 1,
                      const SecurityConfig& client = Credentials().Peer("peer-1")) {
  auto stub = v1::Averager::NewStub(
      *MakeChannel(absl::StrCat("127.0.0.1:", server.host->port()), client));
  v1::ReducePartRequest req;
  req.set_round_id(round_id);
  req.set_sender_peer_id("peer-1");
  req.set_sender_index(1);
  req.set_span(0);
  req.set_offset(0);
  req.set_count(kCount);
  req.set_codec(v1::NONE);
  req.set_weight(weight);
  std::vector<float> values(kCount, value);
  req.set_data(std::string(reinterpret_cast<const char*>(values.data()), kCount * sizeof(float)));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return stub->ReducePart(&ctx, req, response);
}

// Registers `round_id` on `server` as member 0 of peer-0 and peer-1, with a
// one-part span of kCount values; returns its reducer.
std::shared_ptr<SpanReducer> RegisterTwoMemberRound(Server& server, uint64_t round_id,
                                                    std::vector<double> weights = {}) {
  ReducerOptions o;
  o.span_length = kCount;
  o.part_elements = kCount;
  o.num_members = 2;
  o.local_sender = 0;
  auto reducer = std::make_shared<SpanReducer>(o);
  server.service.registry()->RegisterRound(round_id, {"peer-0", "peer-1"}, 0, reducer,
                                           std::move(weights));
  return reducer;
}

// Member 0's own part: kCount ones at weight 1.
void ContributeOwnOnes(SpanReducer& reducer) {
  std::vector<float> own(kCount, 1.0f);
  reducer.Contribute(0, 0, own.data(), kCount, 1.0, absl::Now(), [](auto) {});
}

TEST(AveragerService, APartSentBeforeTheRoundRegistersIsHeldAndServed) {
  Server server(absl::Seconds(30));
  v1::ReducePartResponse response;
  grpc::Status status;
  std::thread sender([&] { status = SendPart(server, 7, 3.0f, &response); });
  absl::SleepFor(absl::Milliseconds(300));  // the part is held by now
  ContributeOwnOnes(*RegisterTwoMemberRound(server, 7));
  sender.join();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_TRUE(response.averaged());
  ASSERT_EQ(response.data().size(), kCount * sizeof(float));
  std::vector<float> mean(kCount);
  std::memcpy(mean.data(), response.data().data(), response.data().size());
  for (float m : mean) ASSERT_EQ(m, 2.0f);
  EXPECT_EQ(response.contributors(), 2u);
}

TEST(AveragerService, APartForARoundThatNeverRegistersIsRefusedAfterTheWait) {
  Server server(absl::Milliseconds(200));
  v1::ReducePartResponse response;
  EXPECT_EQ(SendPart(server, 8, 1.0f, &response).error_code(), grpc::StatusCode::NOT_FOUND);
  // Without a wait, at once.
  Server no_wait(absl::ZeroDuration());
  EXPECT_EQ(SendPart(no_wait, 8, 1.0f, &response).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST(AveragerService, HeldPartsAreBoundedInBytes) {
  // Room for one part's data, not two: the second is refused at once (well
  // before the 30 s wait and the client's 10 s deadline).
  Server server(absl::Seconds(30), kCount * sizeof(float) + 100);
  v1::ReducePartResponse first_response, second_response;
  grpc::Status first;
  std::thread held([&] { first = SendPart(server, 9, 1.0f, &first_response); });
  absl::SleepFor(absl::Milliseconds(300));
  grpc::Status second = SendPart(server, 10, 1.0f, &second_response);
  EXPECT_EQ(second.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(second.error_message().find("at their bound"), std::string::npos)
      << second.error_message();
  // The held one is answered when its round registers and completes.
  ContributeOwnOnes(*RegisterTwoMemberRound(server, 9));
  held.join();
  EXPECT_TRUE(first.ok()) << first.error_message();
}

TEST(AveragerService, AHeldPartEndsWithItsRoundWhenItsOwnerNeverContributes) {
  Server server(absl::Seconds(30));
  v1::ReducePartResponse response;
  grpc::Status status;
  std::thread sender([&] { status = SendPart(server, 11, 1.0f, &response); });
  absl::SleepFor(absl::Milliseconds(300));
  RegisterTwoMemberRound(server, 11);
  server.service.registry()->EndRound(11);  // the reducer finishes without member 0
  sender.join();
  // Served when the round registered, then reduced by Finish() with what it
  // had: member 1's values alone.
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.contributors(), 1u);
}

std::vector<float> MeanOf(const v1::ReducePartResponse& response) {
  std::vector<float> mean(kCount);
  if (response.data().size() == kCount * sizeof(float)) {
    std::memcpy(mean.data(), response.data().data(), response.data().size());
  }
  return mean;
}

TEST(AveragerService, APartsSenderIsWhoItsCredentialSaysAndTheVictimStaysIn) {
  Server server(absl::ZeroDuration());
  auto reducer = RegisterTwoMemberRound(server, 12);
  v1::ReducePartResponse response;
  // Another peer of the run (not a member) sends in peer-1's name; then a
  // process with only the run token does.
  EXPECT_EQ(SendPart(server, 12, 1e30f, &response, 1, Credentials().Peer("peer-2")).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(SendPart(server, 12, 1e30f, &response, 1, Credentials().RunTokenOnly()).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // peer-1 itself is neither excluded nor taken for a duplicate.
  ContributeOwnOnes(*reducer);
  grpc::Status status = SendPart(server, 12, 3.0f, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.contributors(), 2u);
  for (float m : MeanOf(response)) ASSERT_EQ(m, 2.0f);
}

TEST(AveragerService, AWeightAboveTheRoundsAssignmentCountsAsAssigned) {
  Server server(absl::ZeroDuration());
  auto reducer = RegisterTwoMemberRound(server, 13, {1.0, 1.0});
  ContributeOwnOnes(*reducer);
  v1::ReducePartResponse response;
  // 1e30 would make the mean peer-1's 3.0; the round assigned it 1.
  grpc::Status status = SendPart(server, 13, 3.0f, &response, 1e30);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.total_weight(), 2.0);
  for (float m : MeanOf(response)) ASSERT_EQ(m, 2.0f);
}

// Sends `req` with `client`'s credential.
grpc::Status Call(const Server& server, const v1::ReducePartRequest& req,
                  v1::ReducePartResponse* response, const SecurityConfig& client) {
  auto stub = v1::Averager::NewStub(
      *MakeChannel(absl::StrCat("127.0.0.1:", server.host->port()), client));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return stub->ReducePart(&ctx, req, response);
}

// Member `sender`'s part (all `value`) of member `span`'s span, as `kind`.
v1::ReducePartRequest Part(v1::PartKind kind, uint32_t sender, uint32_t span, float value,
                           uint64_t offset = 0) {
  v1::ReducePartRequest req;
  req.set_kind(kind);
  req.set_round_id(20);
  req.set_sender_peer_id(absl::StrCat("peer-", sender));
  req.set_sender_index(sender);
  req.set_span(span);
  req.set_offset(offset);
  req.set_count(kCount);
  req.set_codec(v1::NONE);
  req.set_weight(1);
  if (kind != v1::REVEAL) {
    std::vector<float> values(kCount, value);
    req.set_data(std::string(reinterpret_cast<const char*>(values.data()), kCount * sizeof(float)));
  }
  return req;
}

// Member 0 of three reduces span 0 (keeping its own inputs for auditors)
// and audits the part of span 1 at offset 0.
TEST(AveragerService, AuditCopiesAndRevealsAreCheckedLikeParts) {
  Server server(absl::ZeroDuration());
  ReducerOptions o;
  o.span_length = kCount;
  o.part_elements = kCount;
  o.num_members = 3;
  o.local_sender = 0;
  o.keep_local_inputs = true;
  auto reducer = std::make_shared<SpanReducer>(o);
  server.service.registry()->RegisterRound(20, {"peer-0", "peer-1", "peer-2"}, 0, reducer, {},
                                           {AuditDuty{1, 0, kCount}});
  const SecurityConfig peer1 = Credentials().Peer("peer-1"), peer2 = Credentials().Peer("peer-2");
  v1::ReducePartResponse response;
  auto code = [&](const v1::ReducePartRequest& req, const SecurityConfig& who) {
    return Call(server, req, &response, who).error_code();
  };
  // Copies: not from the audited span's reducer, not of a span this member
  // does not audit, not in another's name, not of another part; once.
  EXPECT_EQ(code(Part(v1::AUDIT_COPY, 1, 1, 2.0f), peer1), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(code(Part(v1::AUDIT_COPY, 2, 2, 2.0f), peer2), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(code(Part(v1::AUDIT_COPY, 2, 1, 2.0f), peer1), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(code(Part(v1::AUDIT_COPY, 2, 1, 2.0f, 8), peer2), grpc::StatusCode::INVALID_ARGUMENT);
  v1::ReducePartRequest nan = Part(v1::AUDIT_COPY, 2, 1, std::nanf(""));
  EXPECT_EQ(code(nan, peer2), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code(Part(v1::AUDIT_COPY, 2, 1, 2.0f), peer2), grpc::StatusCode::OK);
  EXPECT_FALSE(response.averaged());
  EXPECT_EQ(code(Part(v1::AUDIT_COPY, 2, 1, 2.0f), peer2), grpc::StatusCode::INVALID_ARGUMENT);
  auto copies = server.service.registry()->TakeAuditCopies(20, 1, {2}, absl::Now());
  ASSERT_TRUE(copies.ok()) << copies.status();
  EXPECT_TRUE(copies->given[2]);
  EXPECT_FALSE(copies->given[1]);
  EXPECT_EQ(copies->rows[2], std::vector<float>(kCount, 2.0f));
  // Reveals: only once the part is reduced, only to another member.
  EXPECT_EQ(code(Part(v1::REVEAL, 2, 0, 0), peer2), grpc::StatusCode::NOT_FOUND);
  ContributeOwnOnes(*reducer);
  std::thread one([&] { (void)Call(server, Part(v1::REDUCE, 1, 0, 4.0f), &response, peer1); });
  v1::ReducePartResponse two;
  grpc::Status reduced = Call(server, Part(v1::REDUCE, 2, 0, 7.0f), &two, peer2);
  one.join();
  ASSERT_TRUE(reduced.ok()) << reduced.error_message();
  EXPECT_EQ(std::vector<uint32_t>(two.contributor_indexes().begin(), two.contributor_indexes().end()),
            (std::vector<uint32_t>{0, 1, 2}));
  EXPECT_EQ(code(Part(v1::REVEAL, 2, 0, 0), Credentials().RunTokenOnly()),
            grpc::StatusCode::PERMISSION_DENIED);
  v1::ReducePartRequest stranger = Part(v1::REVEAL, 2, 0, 0);
  stranger.set_round_id(99);
  EXPECT_EQ(code(stranger, peer2), grpc::StatusCode::NOT_FOUND);
  // After the round ended, the reducer still shows its own contribution.
  server.service.registry()->EndRound(20);
  v1::ReducePartResponse revealed;
  grpc::Status shown = Call(server, Part(v1::REVEAL, 2, 0, 0), &revealed, peer2);
  ASSERT_TRUE(shown.ok()) << shown.error_message();
  EXPECT_EQ(revealed.total_weight(), 1.0);
  ASSERT_EQ(revealed.data().size(), kCount * sizeof(float));
  float first;
  std::memcpy(&first, revealed.data().data(), sizeof(float));
  EXPECT_EQ(first, 1.0f);
}

}  // namespace
}  // namespace dd::averaging
