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
  EXPECT_EQ(SendPart(server, 10, 1.0f, &second_response).error_code(),
            grpc::StatusCode::NOT_FOUND);
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

}  // namespace
}  // namespace dd::averaging
