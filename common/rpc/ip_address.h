// IP address literals and host:port strings, as the servers compare them
// (who a call came from, whether a target is this machine). Pure: no gRPC
// types.
#ifndef COMMON_RPC_IP_ADDRESS_H_
#define COMMON_RPC_IP_ADDRESS_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace dd {

// An IPv4 or IPv6 address; IPv4 is kept in its IPv4-mapped IPv6 form, so
// the two families compare with ==.
struct IpAddress {
  std::array<uint8_t, 16> bytes{};

  // 127.0.0.0/8 or ::1.
  bool IsLoopback() const;
  bool operator==(const IpAddress& other) const { return bytes == other.bytes; }
};

// The address an IPv4 ("198.18.0.5") or IPv6 ("2001:db8::5", no brackets)
// literal names; nullopt for anything else (host names included).
std::optional<IpAddress> ParseIp(absl::string_view text);

// True for "localhost" and for loopback IP literals (127.0.0.0/8, ::1): a
// host whose traffic never leaves the machine.
bool IsLoopbackHost(absl::string_view host);

// The host of "host:port" without the port and without IPv6 brackets
// ("[::1]:5" -> "::1"); the whole text when it has no port.
std::string HostOf(absl::string_view host_port);

// The IP address in a gRPC peer string ("ipv4:1.2.3.4:5" -> "1.2.3.4",
// "ipv6:[::1]:5" or its percent-encoded form -> "::1"); empty for other
// transports.
std::string RemoteIpOf(const std::string& grpc_peer);

}  // namespace dd

#endif  // COMMON_RPC_IP_ADDRESS_H_
