// Caller: who made an RPC, as the authenticator established it. A plain
// struct without gRPC types, so the services' logic classes (which take it
// as an argument) stay free of gRPC.
#ifndef COMMON_RPC_CALLER_H_
#define COMMON_RPC_CALLER_H_

#include <cstdint>
#include <string>
#include <utility>

namespace dd {

struct Caller {
  enum class Role {
    // The server checks no token (--allow_unauthenticated, local
    // experiments): the request body is trusted as it is.
    kUnchecked,
    // The run's shared token: may join and read, never acts as a peer.
    kRunToken,
    // A peer credential: acts as `peer_id` (incarnation `incarnation`) only.
    kPeer,
    // An invitation (an open run's volunteer before it joined): may join;
    // `peer_id` holds the invitation's name.
    kInvitation,
  };
  Role role = Role::kUnchecked;
  std::string peer_id;
  uint64_t incarnation = 0;
  // The IP address the call came from ("127.0.0.1", "::1"); empty when
  // unknown (not over TCP).
  std::string remote_ip;

  static Caller Unchecked() { return Caller{}; }
  static Caller RunToken() { return Caller{Role::kRunToken, "", 0}; }
  static Caller Peer(std::string id, uint64_t incarnation) {
    return Caller{Role::kPeer, std::move(id), incarnation};
  }
  static Caller Invitation(std::string name) {
    return Caller{Role::kInvitation, std::move(name), 0};
  }
  bool is_peer() const { return role == Role::kPeer; }
  // Peer services (averaging parts, state downloads) serve peers only; a
  // server without authentication trusts everyone.
  bool may_use_peer_services() const { return role == Role::kPeer || role == Role::kUnchecked; }
};

}  // namespace dd

#endif  // COMMON_RPC_CALLER_H_
