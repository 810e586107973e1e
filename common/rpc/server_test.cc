// ServiceHost end to end over real loopback gRPC: health without a token,
// reflection behind the token, plain text and TLS.
#include "common/rpc/server.h"

#include <cstdlib>
#include <string>

#include "common/rpc/channel.h"
#include "common/rpc/health_client.h"
#include "common/rpc/reflection_client.h"
#include "common/rpc/testing/test_certs.h"
#include "gtest/gtest.h"

namespace dd {
namespace {

constexpr char kToken[] = "test-token-0123456789abcdef";

std::string TmpDir() { return std::getenv("TEST_TMPDIR"); }

std::shared_ptr<grpc::Channel> Channel(int port, const SecurityConfig& security,
                                       const std::string& host = "127.0.0.1") {
  auto channel = MakeChannel(host + ":" + std::to_string(port), security);
  EXPECT_TRUE(channel.ok()) << channel.status();
  return *channel;
}

SecurityConfig WithToken(const std::string& token) {
  SecurityConfig c;
  c.auth_token = token;
  return c;
}

class PlainTextServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.security = WithToken(kToken);
    options.port_file = TmpDir() + "/port";
    auto host = ServiceHost::Start(options, {});
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
  }
  std::unique_ptr<ServiceHost> host_;
};

TEST_F(PlainTextServerTest, HealthIsOpenAndFollowsSetServing) {
  auto channel = Channel(host_->port(), SecurityConfig{});  // no token
  auto serving = CheckHealth(channel, "", absl::Seconds(5));
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_FALSE(*serving);
  host_->SetServing(true);
  serving = CheckHealth(channel, "", absl::Seconds(5));
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_TRUE(*serving);
}

TEST_F(PlainTextServerTest, ReflectionNeedsTheRightToken) {
  auto none = ListServicesByReflection(Channel(host_->port(), SecurityConfig{}));
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnauthenticated);
  auto wrong = ListServicesByReflection(
      Channel(host_->port(), WithToken("wrong-token-0123456789abcdef")));
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kUnauthenticated);
  auto right = ListServicesByReflection(Channel(host_->port(), WithToken(kToken)));
  ASSERT_TRUE(right.ok()) << right.status();
  EXPECT_NE(std::find(right->begin(), right->end(), "grpc.health.v1.Health"),
            right->end());
}

TEST_F(PlainTextServerTest, PortFileHoldsTheBoundPort) {
  FILE* f = std::fopen((TmpDir() + "/port").c_str(), "r");
  ASSERT_NE(f, nullptr);
  int port = 0;
  ASSERT_EQ(std::fscanf(f, "%d", &port), 1);
  std::fclose(f);
  EXPECT_EQ(port, host_->port());
}

TEST(ServiceHost, RefusesToStartWithoutATokenUnlessAllowed) {
  ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  EXPECT_EQ(ServiceHost::Start(options, {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  options.security.allow_unauthenticated = true;
  auto host = ServiceHost::Start(options, {});
  ASSERT_TRUE(host.ok()) << host.status();
  EXPECT_TRUE(ListServicesByReflection(Channel((*host)->port(), SecurityConfig{})).ok());
}

TEST(ServiceHost, RefusesHalfATlsConfiguration) {
  ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.security = WithToken(kToken);
  options.security.tls_cert_file = "/nonexistent/cert.pem";
  EXPECT_EQ(ServiceHost::Start(options, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ServiceHost, TlsWithTokenAndPlainTextClientsFail) {
  auto certs = testing::MakeTestCerts(TmpDir());
  ASSERT_TRUE(certs.ok()) << certs.status();
  ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.security = WithToken(kToken);
  options.security.tls_cert_file = certs->server_cert;
  options.security.tls_key_file = certs->server_key;
  auto host = ServiceHost::Start(options, {});
  ASSERT_TRUE(host.ok()) << host.status();
  int port = (*host)->port();

  SecurityConfig tls_client = WithToken(kToken);
  tls_client.tls_ca_file = certs->ca_cert;
  auto ok = ListServicesByReflection(Channel(port, tls_client, "localhost"));
  ASSERT_TRUE(ok.ok()) << ok.status();

  SecurityConfig tls_wrong_token = tls_client;
  tls_wrong_token.auth_token = "wrong-token-0123456789abcdef";
  EXPECT_EQ(ListServicesByReflection(Channel(port, tls_wrong_token, "localhost"))
                .status()
                .code(),
            absl::StatusCode::kUnauthenticated);

  // A plain-text client cannot talk to the TLS port.
  auto plain = ListServicesByReflection(Channel(port, WithToken(kToken)),
                                        absl::Seconds(3));
  EXPECT_FALSE(plain.ok());

  // Health stays open over TLS without a token.
  SecurityConfig tls_no_token;
  tls_no_token.tls_ca_file = certs->ca_cert;
  auto health = CheckHealth(Channel(port, tls_no_token, "localhost"), "",
                            absl::Seconds(5));
  EXPECT_TRUE(health.ok()) << health.status();
}

TEST(MakeChannel, NoTokenInPlainTextBeyondLoopback) {
  SecurityConfig plain;
  plain.auth_token = "plain-text-token-0123456789";
  for (const char* local : {"127.0.0.1:5", "localhost:5", "[::1]:5", "ipv4:127.0.0.2:5",
                            "unix:/tmp/x.sock"}) {
    EXPECT_TRUE(IsLoopbackTarget(local)) << local;
    EXPECT_TRUE(MakeChannel(local, plain).ok()) << local;
  }
  for (const char* remote : {"198.18.0.5:5", "example.org:5", "[2001:db8::1]:5", "10.0.0.1:5"}) {
    EXPECT_FALSE(IsLoopbackTarget(remote)) << remote;
    EXPECT_EQ(MakeChannel(remote, plain).status().code(), absl::StatusCode::kFailedPrecondition)
        << remote;
  }
  SecurityConfig opted_in = plain;
  opted_in.insecure = true;
  EXPECT_TRUE(MakeChannel("198.18.0.5:5", opted_in).ok());
  // Without a secret (a health probe) nothing can leak.
  EXPECT_TRUE(MakeChannel("198.18.0.5:5", SecurityConfig{}).ok());
}

TEST(ServiceHost, ShutdownIsIdempotentAndStopsServing) {
  ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.security = WithToken(kToken);
  auto host = ServiceHost::Start(options, {});
  ASSERT_TRUE(host.ok());
  int port = (*host)->port();
  (*host)->Shutdown(absl::Seconds(1));
  (*host)->Shutdown(absl::Seconds(1));
  auto after = CheckHealth(Channel(port, SecurityConfig{}), "", absl::Seconds(2));
  EXPECT_FALSE(after.ok());
}

}  // namespace
}  // namespace dd
