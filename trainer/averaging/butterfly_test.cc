// The butterfly all-reduce with N = 1..8 members as threads in one process,
// each with its own real gRPC server on loopback, checked against the
// closed-form weighted mean; faults injected by members that stall, send
// garbage, or are not members at all.
#include "trainer/averaging/butterfly.h"

#include <cmath>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/rpc/channel.h"
#include "common/rpc/server.h"
#include "common/rpc/testing/test_run_credentials.h"
#include "gtest/gtest.h"

namespace dd::averaging {
namespace {

constexpr char kToken[] = "butterfly-test-token-0123456789";

struct Member {
  AveragerService service;
  std::unique_ptr<ServiceHost> host;
  std::unique_ptr<ButterflyAllReduce> allreduce;
};

// The run's credentials: member i acts as "peer-i" (Spec's ids).
const testing::TestRunCredentials& Credentials() {
  static const auto* credentials = new testing::TestRunCredentials(kToken);
  return *credentials;
}

SecurityConfig Security() { return Credentials().Server(); }

std::vector<std::unique_ptr<Member>> StartMembers(int n) {
  std::vector<std::unique_ptr<Member>> members;
  for (int i = 0; i < n; ++i) {
    auto m = std::make_unique<Member>();
    ServerOptions o;
    o.listen_address = "127.0.0.1:0";
    o.security = Security();
    auto host = ServiceHost::Start(o, {&m->service});
    EXPECT_TRUE(host.ok()) << host.status();
    m->host = std::move(*host);
    m->host->SetServing(true);
    m->allreduce = std::make_unique<ButterflyAllReduce>(
        &m->service, Credentials().Peer(absl::StrCat("peer-", i)));
    members.push_back(std::move(m));
  }
  return members;
}

RoundSpec Spec(const std::vector<std::unique_ptr<Member>>& members, uint64_t length,
               uint64_t round_id = 1, std::vector<double> bandwidths = {}) {
  RoundSpec spec;
  spec.round_id = round_id;
  for (size_t i = 0; i < members.size(); ++i) {
    spec.peer_ids.push_back(absl::StrCat("peer-", i));
    spec.addresses.push_back(absl::StrCat("127.0.0.1:", members[i]->host->port()));
  }
  spec.span_starts = SplitSpans(length, members.size(), bandwidths);
  return spec;
}

// Member i's value at position k.
float Value(int i, uint64_t k) { return std::sin(0.001f * k + i) * (1 + i) + 0.01f * i; }

struct RunOutput {
  std::vector<std::vector<float>> values;
  std::vector<absl::StatusOr<AllReduceResult>> results;
};

RunOutput RunRound(std::vector<std::unique_ptr<Member>>& members, const RoundSpec& base,
                   const AllReduceOptions& options, const std::vector<double>& weights,
                   const std::vector<int>& skip = {},
                   std::vector<std::vector<float>>* codec_errors = nullptr,
                   std::vector<std::vector<float>>* mean_errors = nullptr) {
  size_t n = base.span_starts.back();
  if (codec_errors != nullptr) codec_errors->assign(members.size(), std::vector<float>(n, NAN));
  RunOutput out;
  out.values.resize(members.size());
  out.results.resize(members.size(), absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < members.size(); ++i) {
    out.values[i].resize(n);
    for (uint64_t k = 0; k < n; ++k) out.values[i][k] = Value(i, k);
    if (std::find(skip.begin(), skip.end(), static_cast<int>(i)) != skip.end()) continue;
    threads.emplace_back([&, i] {
      RoundSpec spec = base;
      spec.my_index = i;
      CodecErrors errors;
      if (codec_errors != nullptr) errors.sent = (*codec_errors)[i].data();
      if (mean_errors != nullptr) errors.mean = (*mean_errors)[i].data();
      out.results[i] = members[i]->allreduce->Run(spec, options, out.values[i].data(), n,
                                                  weights[i], errors);
    });
  }
  for (auto& t : threads) t.join();
  return out;
}

double WeightedMean(const std::vector<double>& w, uint64_t k, const std::vector<int>& only = {}) {
  double num = 0, den = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    if (!only.empty() && std::find(only.begin(), only.end(), static_cast<int>(i)) == only.end()) {
      continue;
    }
    num += w[i] * Value(i, k);
    den += w[i];
  }
  return num / den;
}

AllReduceOptions Fast(CodecId codec = CodecId::kNone) {
  AllReduceOptions o;
  o.codec = codec;
  o.part_elements = 1000;  // many parts even for small vectors
  o.sender_timeout = absl::Seconds(2);
  o.reducer_timeout = absl::Seconds(4);
  o.deadline = absl::Now() + absl::Seconds(30);
  return o;
}

TEST(Butterfly, EveryGroupSizeGivesTheWeightedMeanIdenticallyOnEveryMember) {
  for (int n_members : {1, 2, 3, 5, 8}) {
    auto members = StartMembers(n_members);
    uint64_t length = 10007 + n_members;  // not a multiple of anything
    std::vector<double> weights;
    for (int i = 0; i < n_members; ++i) weights.push_back(1 + 3 * i);  // uneven
    auto out = RunRound(members, Spec(members, length), Fast(), weights);
    for (int i = 0; i < n_members; ++i) {
      ASSERT_TRUE(out.results[i].ok()) << out.results[i].status();
      EXPECT_DOUBLE_EQ(out.results[i]->fraction_averaged, 1.0);
      for (uint32_t c : out.results[i]->contributors) EXPECT_EQ(c, static_cast<uint32_t>(n_members));
      EXPECT_EQ(out.values[i], out.values[0]) << "member " << i << " differs";
    }
    for (uint64_t k = 0; k < length; ++k) {
      ASSERT_NEAR(out.values[0][k], WeightedMean(weights, k), 1e-5) << k;
    }
  }
}

TEST(Butterfly, EveryCodecStaysWithinItsBoundAndMembersAgree) {
  auto members = StartMembers(4);
  const uint64_t length = 20000;
  std::vector<double> weights = {1, 2, 3, 4};
  struct Case {
    CodecId codec;
    double bound;  // max |error| for values of magnitude <= ~9
  } cases[] = {{CodecId::kFp16, 0.02}, {CodecId::kBf16, 0.1}, {CodecId::kUniform8Bit, 0.35},
               {CodecId::kBlockwise8Bit, 0.15}};
  uint64_t round = 10;
  for (const auto& c : cases) {
    auto out = RunRound(members, Spec(members, length, round++), Fast(c.codec), weights);
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(out.results[i].ok()) << out.results[i].status();
      EXPECT_EQ(out.values[i], out.values[0]) << CodecFor(c.codec).name();
      EXPECT_LT(out.results[i]->bytes_sent, length * 4) << CodecFor(c.codec).name();
    }
    double max_err = 0;
    for (uint64_t k = 0; k < length; ++k) {
      max_err = std::max(max_err, std::fabs(out.values[0][k] - WeightedMean(weights, k)));
    }
    EXPECT_LT(max_err, c.bound) << CodecFor(c.codec).name();
  }
}

// Error feedback's input: what the codec dropped of each part a member
// sent, 0 on its own span (contributed exactly), computed here part by part
// as the butterfly cuts spans (parts of part_elements from each span start).
TEST(Butterfly, CodecErrorIsWhatTheCodecDroppedOfEachPartSent) {
  auto members = StartMembers(3);
  const uint64_t length = 7001;
  RoundSpec spec = Spec(members, length, 95);
  const AllReduceOptions o = Fast(CodecId::kBlockwise8Bit);
  std::vector<std::vector<float>> errors;
  auto out = RunRound(members, spec, o, {1.0, 2.0, 3.0}, {}, &errors);
  const Codec& codec = CodecFor(CodecId::kBlockwise8Bit);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(out.results[i].ok()) << out.results[i].status();
    double dropped = 0;
    for (int j = 0; j < 3; ++j) {
      const uint64_t start = spec.span_starts[j], len = spec.span_starts[j + 1] - start;
      for (uint64_t off = 0; off < len; off += o.part_elements) {
        const uint32_t count = static_cast<uint32_t>(std::min<uint64_t>(o.part_elements, len - off));
        std::vector<float> part(count), kept(count);
        for (uint32_t k = 0; k < count; ++k) part[k] = Value(i, start + off + k);
        std::string bytes;
        codec.Encode(part.data(), count, &bytes);
        ASSERT_TRUE(codec.Decode(bytes, count, kept.data()).ok());
        for (uint32_t k = 0; k < count; ++k) {
          const float want = j == i ? 0.0f : part[k] - kept[k];
          ASSERT_EQ(errors[i][start + off + k], want) << i << " " << j << " " << off + k;
          dropped += std::abs(want);
        }
      }
    }
    EXPECT_GT(dropped, 0);  // 8 bits do drop something
  }
}

// Error feedback at the reducers, over two rounds of the sparse codec: for
// every position, what the members got plus what the owner's residual kept
// is the exact mean of what was sent (the senders' decoded parts, the
// owner's exact values) plus the residual it started with; residuals
// outside the owner's span are untouched.
TEST(Butterfly, ReducersCarryWhatTheCodecDroppedOfTheirMeansToTheNextRound) {
  auto members = StartMembers(3);
  const uint64_t length = 9001;
  const AllReduceOptions o = Fast(CodecId::kTopK8Bit);
  const std::vector<double> w = {1.0, 2.0, 3.0};
  std::vector<std::vector<float>> mean_errors(3, std::vector<float>(length, 0.0f));
  for (uint64_t round = 1; round <= 2; ++round) {
    const RoundSpec spec = Spec(members, length, 150 + round);
    const auto before = mean_errors;
    std::vector<std::vector<float>> sent_errors;
    auto out = RunRound(members, spec, o, w, {}, &sent_errors, &mean_errors);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(out.results[i].ok()) << out.results[i].status();
    EXPECT_EQ(out.values[0], out.values[1]);
    EXPECT_EQ(out.values[0], out.values[2]);
    double carried = 0;
    for (int j = 0; j < 3; ++j) {
      for (uint64_t k = 0; k < length; ++k) {
        const bool own = k >= spec.span_starts[j] && k < spec.span_starts[j + 1];
        if (!own) {
          ASSERT_EQ(mean_errors[j][k], before[j][k]) << j << " " << k;
          continue;
        }
        double sum = 0;
        for (int i = 0; i < 3; ++i) sum += w[i] * (Value(i, k) - sent_errors[i][k]);
        const double want = sum / 6.0 + before[j][k];
        ASSERT_NEAR(out.values[0][k] + mean_errors[j][k], want, 1e-5 * (1 + std::fabs(want)))
            << "round " << round << " position " << k;
        carried += std::fabs(mean_errors[j][k]);
      }
    }
    EXPECT_GT(carried, 0);  // the sparse mean does leave values for later
  }
}

TEST(Butterfly, DeltaResultsLikeHivemindStayWithinTheCodecBound) {
  auto members = StartMembers(3);
  const uint64_t length = 9000;
  std::vector<double> weights = {1, 2, 3};
  AllReduceOptions o = Fast(CodecId::kFp16);
  o.delta_results = true;
  auto out = RunRound(members, Spec(members, length, 90), o, weights);
  double max_err = 0;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(out.results[i].ok()) << out.results[i].status();
    EXPECT_DOUBLE_EQ(out.results[i]->fraction_averaged, 1.0);
    for (uint64_t k = 0; k < length; ++k) {
      max_err = std::max(max_err, std::fabs(out.values[i][k] - WeightedMean(weights, k)));
    }
  }
  EXPECT_LT(max_err, 0.02);
}

TEST(Butterfly, BandwidthProportionalSpansAndClientOnlyMembers) {
  auto members = StartMembers(3);
  // Member 2 has no bandwidth to spare (client-only): it owns no span.
  RoundSpec spec = Spec(members, 9000, 20, {2.0, 1.0, 0.0});
  EXPECT_EQ(spec.span_starts, (std::vector<uint64_t>{0, 6000, 9000, 9000}));
  std::vector<double> weights = {1, 1, 2};
  auto out = RunRound(members, spec, Fast(), weights);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(out.results[i].ok());
    EXPECT_EQ(out.values[i], out.values[0]);
  }
  for (uint64_t k = 0; k < 9000; k += 7) ASSERT_NEAR(out.values[2][k], WeightedMean(weights, k), 1e-5);
}

TEST(Butterfly, AStalledMemberIsExcludedAndTheOthersFinish) {
  auto members = StartMembers(4);
  std::vector<double> weights = {1, 2, 3, 4};
  AllReduceOptions o = Fast();
  // Long enough that a live member on a loaded CI machine is never taken
  // for a stalled one.
  o.sender_timeout = absl::Milliseconds(1500);
  o.reducer_timeout = absl::Seconds(3);
  o.deadline = absl::Now() + absl::Seconds(15);
  RoundSpec spec = Spec(members, 8000, 30);
  absl::Time t0 = absl::Now();
  auto out = RunRound(members, spec, o, weights, /*skip=*/{3});  // member 3 never shows up
  EXPECT_LT(absl::Now() - t0, absl::Seconds(10));
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(out.results[i].ok()) << out.results[i].status();
    // Member 3's span could not be reduced: 3/4 of the vector averaged.
    EXPECT_NEAR(out.results[i]->fraction_averaged, 0.75, 1e-9);
  }
  // The other spans are the mean over members 0..2 with renormalised weights.
  for (uint64_t k = 0; k < spec.span_starts[3]; k += 13) {
    for (int i = 0; i < 3; ++i) {
      ASSERT_NEAR(out.values[i][k], WeightedMean(weights, k, {0, 1, 2}), 1e-5);
    }
  }
  // In member 3's span everyone kept its own values.
  for (uint64_t k = spec.span_starts[3]; k < 8000; k += 13) {
    for (int i = 0; i < 3; ++i) ASSERT_EQ(out.values[i][k], Value(i, k));
  }
  // Each survivor's round record says who stalled: member 3 never knew the
  // round and failed as a reducer; its own reducer excluded it as a sender.
  for (int i = 0; i < 3; ++i) {
    const std::string& trouble = out.results[i]->trouble;
    const size_t line = trouble.find("member 3: ");
    ASSERT_NE(line, std::string::npos) << trouble;
    const std::string member3 = trouble.substr(line, trouble.find('\n', line) - line);
    EXPECT_NE(member3.find(" 0 answered"), std::string::npos) << member3;
    EXPECT_NE(member3.find("before it knew the round, FAILED"), std::string::npos) << member3;
    EXPECT_NE(trouble.find("senders excluded member -1 part 0: 1 silent"), std::string::npos)
        << trouble;
  }
}

TEST(Butterfly, AHealthyRoundLeavesNoTroubleRecord) {
  auto members = StartMembers(3);
  auto out = RunRound(members, Spec(members, 5000, 31), Fast(), {1, 1, 1});
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(out.results[i].ok());
    EXPECT_EQ(out.results[i]->trouble, "");
  }
}

TEST(Butterfly, NonFiniteInputIsRefusedBeforeSending) {
  auto members = StartMembers(1);
  std::vector<float> v(10, 1.0f);
  v[3] = std::nanf("");
  RoundSpec spec = Spec(members, 10, 40);
  auto r = members[0]->allreduce->Run(spec, Fast(), v.data(), v.size(), 1.0);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  v[3] = 1.0f;
  EXPECT_EQ(members[0]->allreduce->Run(spec, Fast(), v.data(), v.size(), -1.0).status().code(),
            absl::StatusCode::kInvalidArgument);
  AllReduceOptions bad = Fast();
  bad.reducer_timeout = bad.sender_timeout;
  EXPECT_EQ(members[0]->allreduce->Run(spec, bad, v.data(), v.size(), 1.0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A raw client that talks to a member's reducer directly, as a broken or
// hostile peer would.
class RawSender {
 public:
  // Calls with the credential of peer `as`.
  RawSender(const Member& target, const std::string& as) {
    stub_ = v1::Averager::NewStub(*MakeChannel(absl::StrCat("127.0.0.1:", target.host->port()),
                                               Credentials().Peer(as)));
  }
  grpc::Status Send(const v1::ReducePartRequest& req, v1::ReducePartResponse* resp = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::ReducePartResponse ignored;
    return stub_->ReducePart(&ctx, req, resp ? resp : &ignored);
  }

 private:
  std::unique_ptr<v1::Averager::Stub> stub_;
};

TEST(Butterfly, GarbageFromAMemberGetsItExcludedAndTheRoundGoesOn) {
  auto members = StartMembers(3);
  std::vector<double> weights = {1, 1, 1};
  RoundSpec spec = Spec(members, 3000, 50);
  AllReduceOptions o = Fast();
  o.sender_timeout = absl::Seconds(1);
  o.reducer_timeout = absl::Seconds(2);
  // Member 2 does not run the round; instead a raw client speaking as member
  // 2 sends NaN to member 0 and a wrong-sized part to member 1.
  std::thread garbage([&] {
    absl::SleepFor(absl::Milliseconds(100));
    v1::ReducePartRequest req;
    req.set_round_id(50);
    req.set_sender_peer_id("peer-2");
    req.set_sender_index(2);
    req.set_span(0);
    req.set_offset(0);
    req.set_count(1000);
    req.set_codec(v1::NONE);
    std::vector<float> nan(1000, std::nanf(""));
    req.set_data(std::string(reinterpret_cast<const char*>(nan.data()), 4000));
    req.set_weight(1);
    EXPECT_EQ(RawSender(*members[0], "peer-2").Send(req).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
    req.set_span(1);
    req.set_data(std::string(3999, 'x'));
    EXPECT_EQ(RawSender(*members[1], "peer-2").Send(req).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  });
  absl::Time t0 = absl::Now();
  auto out = RunRound(members, spec, o, weights, /*skip=*/{2});
  garbage.join();
  // Excluded at once for bad data: no need to wait for the sender timeout
  // on spans 0 and 1.
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(out.results[i].ok());
    EXPECT_NEAR(out.results[i]->fraction_averaged, 2.0 / 3, 1e-9);
    for (uint64_t k = 0; k < spec.span_starts[2]; k += 11) {
      ASSERT_NEAR(out.values[i][k], WeightedMean(weights, k, {0, 1}), 1e-5);
    }
  }
  EXPECT_LT(absl::Now() - t0, absl::Seconds(8));
}

TEST(Butterfly, NonMembersAndForeignRoundsAreRefused) {
  auto members = StartMembers(2);
  RoundSpec spec = Spec(members, 2000, 60);
  std::thread runner([&] {
    std::vector<double> w = {1, 1};
    auto o = Fast();
    o.sender_timeout = absl::Milliseconds(800);
    o.reducer_timeout = absl::Milliseconds(1600);
    RunRound(members, spec, o, w, /*skip=*/{1});
  });
  absl::SleepFor(absl::Milliseconds(200));
  v1::ReducePartRequest req;
  req.set_round_id(60);
  req.set_sender_peer_id("intruder");
  req.set_sender_index(1);
  req.set_span(0);
  req.set_count(1000);
  req.set_data(std::string(4000, '\0'));
  EXPECT_EQ(RawSender(*members[0], "intruder").Send(req).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  RawSender raw(*members[0], "peer-1");
  req.set_sender_index(7);
  req.set_sender_peer_id("peer-1");
  EXPECT_EQ(raw.Send(req).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  req.set_sender_index(1);
  req.set_round_id(61);
  EXPECT_EQ(raw.Send(req).error_code(), grpc::StatusCode::NOT_FOUND);
  runner.join();
  req.set_round_id(60);
  EXPECT_EQ(raw.Send(req).error_code(), grpc::StatusCode::FAILED_PRECONDITION);  // round over
  // Without the token nothing gets through at all.
  auto no_token = v1::Averager::NewStub(
      *MakeChannel(absl::StrCat("127.0.0.1:", members[0]->host->port()), SecurityConfig{}));
  grpc::ClientContext ctx;
  v1::ReducePartResponse resp;
  EXPECT_EQ(no_token->ReducePart(&ctx, req, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST(Butterfly, ZeroTotalWeightKeepsLocalValues) {
  auto members = StartMembers(2);
  auto out = RunRound(members, Spec(members, 3000, 70), Fast(), {0.0, 0.0});
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(out.results[i].ok());
    EXPECT_EQ(out.results[i]->fraction_averaged, 0.0);
    for (uint64_t k = 0; k < 3000; k += 17) ASSERT_EQ(out.values[i][k], Value(i, k));
  }
}

TEST(Butterfly, CenteredClipResistsOneGarbageMember) {
  auto members = StartMembers(5);
  AllReduceOptions o = Fast();
  o.aggregation = Aggregation::kCenteredClip;
  o.clip_tau = 1.0;
  const uint64_t length = 500;
  // Members 0..3 hold values near 1; member 4 holds 1000.
  std::vector<std::vector<float>> values(5, std::vector<float>(length));
  for (int i = 0; i < 5; ++i)
    for (uint64_t k = 0; k < length; ++k) values[i][k] = i == 4 ? 1000.0f : 1.0f + 0.01f * i;
  RoundSpec base = Spec(members, length, 80);
  std::vector<std::thread> threads;
  std::vector<absl::StatusOr<AllReduceResult>> results(5, absl::UnknownError(""));
  for (int i = 0; i < 5; ++i) {
    threads.emplace_back([&, i] {
      RoundSpec s = base;
      s.my_index = i;
      results[i] = members[i]->allreduce->Run(s, o, values[i].data(), length, 1.0);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(results[i].ok());
  // A plain mean would be ~200.8; CenteredClip stays near the honest values
  // (moved by at most tau / sqrt(part length) per coordinate and iteration).
  for (uint64_t k = 0; k < length; ++k) ASSERT_LT(std::fabs(values[0][k] - 1.015f), 1.0f) << k;
  EXPECT_EQ(values[0], values[3]);
}

}  // namespace
}  // namespace dd::averaging
