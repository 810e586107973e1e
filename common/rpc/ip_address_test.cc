#include "common/rpc/ip_address.h"

#include "gtest/gtest.h"

namespace dd {
namespace {

TEST(ParseIp, BothFamiliesCompareInOneForm) {
  ASSERT_TRUE(ParseIp("198.18.0.5").has_value());
  EXPECT_EQ(*ParseIp("198.18.0.5"), *ParseIp("::ffff:198.18.0.5"));
  EXPECT_FALSE(*ParseIp("198.18.0.5") == *ParseIp("198.18.0.6"));
  EXPECT_FALSE(ParseIp("trainer-0.trainers").has_value());
  EXPECT_FALSE(ParseIp("[::1]").has_value());  // brackets belong to host:port
  EXPECT_TRUE(ParseIp("127.0.0.2")->IsLoopback());
  EXPECT_TRUE(ParseIp("::1")->IsLoopback());
  EXPECT_FALSE(ParseIp("198.18.0.5")->IsLoopback());
  EXPECT_FALSE(ParseIp("::2")->IsLoopback());
}

TEST(IsLoopbackHost, NamesAndLiterals) {
  EXPECT_TRUE(IsLoopbackHost("localhost"));
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackHost("::1"));
  EXPECT_FALSE(IsLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackHost("coordinator"));
  EXPECT_FALSE(IsLoopbackHost("198.18.0.5"));
}

TEST(HostOf, StripsThePortAndBrackets) {
  EXPECT_EQ(HostOf("198.18.0.5:7000"), "198.18.0.5");
  EXPECT_EQ(HostOf("[2001:db8::1]:443"), "2001:db8::1");
  EXPECT_EQ(HostOf("trainer-0:7000"), "trainer-0");
  EXPECT_EQ(HostOf("localhost"), "localhost");
  EXPECT_EQ(HostOf("2001:db8::1"), "2001:db8::1");
}

TEST(RemoteIpOf, ReadsGrpcPeerStrings) {
  EXPECT_EQ(RemoteIpOf("ipv4:198.18.0.5:43210"), "198.18.0.5");
  EXPECT_EQ(RemoteIpOf("ipv6:%5B::1%5D:43210"), "::1");
  EXPECT_EQ(RemoteIpOf("ipv6:[2001:db8::1]:5"), "2001:db8::1");
  EXPECT_EQ(RemoteIpOf("unix:/tmp/sock"), "");
}

}  // namespace
}  // namespace dd
