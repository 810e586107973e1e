#include "common/rpc/ip_address.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"

namespace dd {

bool IpAddress::IsLoopback() const {
  static constexpr std::array<uint8_t, 16> kV6Loopback{0, 0, 0, 0, 0, 0, 0, 0,
                                                       0, 0, 0, 0, 0, 0, 0, 1};
  const bool v4_mapped = bytes[10] == 0xff && bytes[11] == 0xff &&
                         std::all_of(bytes.begin(), bytes.begin() + 10,
                                     [](uint8_t b) { return b == 0; });
  return bytes == kV6Loopback || (v4_mapped && bytes[12] == 127);
}

std::optional<IpAddress> ParseIp(absl::string_view text) {
  const std::string s(text);
  IpAddress ip;
  uint8_t v4[4];
  if (inet_pton(AF_INET, s.c_str(), v4) == 1) {
    ip.bytes[10] = ip.bytes[11] = 0xff;
    std::memcpy(&ip.bytes[12], v4, 4);
    return ip;
  }
  if (inet_pton(AF_INET6, s.c_str(), ip.bytes.data()) == 1) return ip;
  return std::nullopt;
}

bool IsLoopbackHost(absl::string_view host) {
  if (host == "localhost") return true;
  auto ip = ParseIp(host);
  return ip.has_value() && ip->IsLoopback();
}

std::string HostOf(absl::string_view host_port) {
  if (absl::StartsWith(host_port, "[")) {
    size_t close = host_port.find(']');
    if (close != absl::string_view::npos) return std::string(host_port.substr(1, close - 1));
  }
  size_t colon = host_port.rfind(':');
  // A bare IPv6 literal has several colons and no port.
  if (colon == absl::string_view::npos || host_port.find(':') != colon) {
    return std::string(host_port);
  }
  return std::string(host_port.substr(0, colon));
}

std::string RemoteIpOf(const std::string& grpc_peer) {
  absl::string_view p = grpc_peer;
  if (absl::ConsumePrefix(&p, "ipv4:")) return HostOf(p);
  if (absl::ConsumePrefix(&p, "ipv6:")) {
    // Percent-encoded in gRPC's peer strings: "ipv6:%5B::1%5D:5".
    std::string text = absl::StrReplaceAll(p, {{"%5B", "["}, {"%5D", "]"}});
    if (absl::StartsWith(text, "[")) return HostOf(text);
  }
  return "";
}

}  // namespace dd
