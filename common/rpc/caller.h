// Caller: who made an RPC, as the authenticator established it. A plain
// struct without gRPC types, so the services' logic classes (which take it
// as an argument) stay free of gRPC.
#ifndef COMMON_RPC_CALLER_H_
#define COMMON_RPC_CALLER_H_

#include <cstdint>
#include <string>

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
  };
  Role role = Role::kUnchecked;
  std::string peer_id;
  uint64_t incarnation = 0;

  static Caller Unchecked() { return Caller{}; }
  static Caller RunToken() { return Caller{Role::kRunToken, "", 0}; }
  static Caller Peer(std::string id, uint64_t incarnation) {
    return Caller{Role::kPeer, std::move(id), incarnation};
  }
  bool is_peer() const { return role == Role::kPeer; }
};

}  // namespace dd

#endif  // COMMON_RPC_CALLER_H_
