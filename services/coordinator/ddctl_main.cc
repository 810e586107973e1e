// ddctl: the coordinator for people.
//
//   ddctl --coordinator=HOST:PORT status
//   ddctl --coordinator=HOST:PORT peers
//   ddctl --coordinator=HOST:PORT chunks [--state=leased|pending] [--owner=PEER]
//   ddctl --coordinator=HOST:PORT release CHUNK_ID     (admin token)
//   ddctl --coordinator=HOST:PORT evict PEER_ID        (admin token)
//   ddctl --coordinator=HOST:PORT invite NAME > NAME.token   (admin token)
#include <algorithm>
#include <iostream>

#include <gflags/gflags.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "common/init/init.h"
#include "common/io/file_util.h"
#include "common/rpc/channel.h"
#include "common/rpc/security.h"
#include "common/status/grpc_status.h"
#include "protos/coordinator.grpc.pb.h"

DEFINE_string(coordinator, "127.0.0.1:50050",
              "Coordinator host:port (for invite/evict/release, and the full listings, its "
              "admin address when it serves admin calls apart: --admin_port).");
DEFINE_string(state, "", "chunks: only 'leased' or 'pending' chunks.");
DEFINE_string(owner, "", "chunks: only chunks leased by this peer.");
DEFINE_int32(points, 50, "history: the newest this many global steps.");
DEFINE_string(admin_token_file, "",
              "Admin token for release/evict (else DD_ADMIN_TOKEN); with it, peers and "
              "chunks also show incarnations and lease ids.");
DEFINE_int32(ttl_s, 0, "invite: seconds the invitation stays valid (0: 30 days).");
DEFINE_int32(ban_s, 0, "evict: keep the peer out this many seconds (0: the coordinator's "
                       "--eviction_ban).");

namespace {

namespace v1 = distdiff::coordinator::v1;

std::string Time(int64_t ms) {
  if (ms == 0) return "-";
  return absl::FormatTime("%H:%M:%S", absl::FromUnixMillis(ms), absl::LocalTimeZone());
}

const char* ReachabilityName(v1::Reachability r) {
  switch (r) {
    case v1::PROBING: return "probing";
    case v1::REACHABLE: return "reachable";
    case v1::UNREACHABLE: return "UNREACHABLE";
    case v1::CLIENT_ONLY: return "client-only";
    default: return "?";
  }
}

absl::StatusOr<std::string> AdminToken() {
  if (!FLAGS_admin_token_file.empty()) {
    auto t = dd::ReadFileToString(FLAGS_admin_token_file, 4096);
    if (!t.ok()) return t.status();
    return std::string(absl::StripTrailingAsciiWhitespace(*t));
  }
  if (const char* env = std::getenv("DD_ADMIN_TOKEN")) return std::string(env);
  return absl::FailedPreconditionError("needs --admin_token_file or DD_ADMIN_TOKEN");
}

absl::Status Run(int argc, char** argv) {
  if (argc < 2) return absl::InvalidArgumentError("usage: ddctl status|peers|chunks|history|release|evict|invite");
  auto security = dd::SecurityConfigFromFlags();
  if (!security.ok()) return security.status();
  auto channel = dd::MakeChannel(FLAGS_coordinator, *security);
  if (!channel.ok()) return channel.status();
  auto stub = v1::Coordinator::NewStub(*channel);
  std::string cmd = argv[1];
  if (cmd == "status") {
    auto ctx = dd::MakeCallContext();
    v1::RunState s;
    grpc::Status st = stub->GetRunState(ctx.get(), {}, &s);
    if (!st.ok()) return dd::FromGrpcStatus(st, "GetRunState");
    std::cout << absl::StrFormat(
        "run %s  epoch %d\nchunks: %d total, %d pending, %d leased, %d done this epoch\n"
        "samples trained: %d (%d chunk completions)\npeers: %d live, %.1f samples/s\n",
        s.run_id(), s.epoch(), s.num_chunks(), s.chunks_pending(), s.chunks_leased(),
        s.chunks_done(), s.samples_done(), s.completions(), s.live_peers(),
        s.samples_per_second());
    return absl::OkStatus();
  }
  // Listings show incarnations and lease ids to admins only.
  auto admin_context = [] {
    auto ctx = dd::MakeCallContext();
    if (auto token = AdminToken(); token.ok()) ctx->AddMetadata("x-dd-admin-token", *token);
    return ctx;
  };
  if (cmd == "peers") {
    auto ctx = admin_context();
    v1::ListPeersResponse r;
    grpc::Status st = stub->ListPeers(ctx.get(), {}, &r);
    if (!st.ok()) return dd::FromGrpcStatus(st, "ListPeers");
    std::cout << absl::StrFormat("%-20s %4s %-12s %-22s %6s %7s %9s %9s  %s\n", "peer", "inc",
                                 "reachability", "address", "step", "leases", "samples/s",
                                 "heartbeat", "name");
    for (const auto& p : r.peers()) {
      std::cout << absl::StrFormat("%-20s %4d %-12s %-22s %6d %7d %9.1f %9s  %s\n", p.peer_id(),
                                   p.incarnation(), ReachabilityName(p.reachability()),
                                   p.address().empty() ? "-" : p.address(), p.global_step(),
                                   p.leased_chunks(), p.samples_per_second(),
                                   Time(p.last_heartbeat_unix_ms()), p.display_name());
    }
    return absl::OkStatus();
  }
  if (cmd == "history") {
    auto ctx = dd::MakeCallContext();
    v1::GetHistoryRequest req;
    req.set_max_points(FLAGS_points);
    v1::GetHistoryResponse r;
    grpc::Status st = stub->GetHistory(ctx.get(), req, &r);
    if (!st.ok()) return dd::FromGrpcStatus(st, "GetHistory");
    std::cout << absl::StrFormat("%8s %9s %5s %9s %10s %8s %8s %10s\n", "step", "time", "peers",
                                 "loss", "lr", "step_s", "avg_s", "samples/s");
    for (const auto& p : r.points()) {
      std::cout << absl::StrFormat("%8d %9s %5d %9.5f %10.3g %8.2f %8.2f %10.1f\n", p.step(),
                                   Time(p.unix_ms()), p.reporters(), p.loss(), p.learning_rate(),
                                   p.step_seconds(), p.averaging_seconds(),
                                   p.samples_per_second());
    }
    return absl::OkStatus();
  }
  if (cmd == "chunks") {
    v1::ListChunksRequest req;
    if (FLAGS_state == "leased") req.set_state(v1::LEASED);
    if (FLAGS_state == "pending") req.set_state(v1::PENDING);
    req.set_owner_peer_id(FLAGS_owner);
    std::cout << absl::StrFormat("%8s %-8s %6s %8s %-20s %9s %s\n", "chunk", "state", "times",
                                 "samples", "owner", "deadline", "failed");
    do {
      auto ctx = admin_context();
      v1::ListChunksResponse r;
      grpc::Status st = stub->ListChunks(ctx.get(), req, &r);
      if (!st.ok()) return dd::FromGrpcStatus(st, "ListChunks");
      for (const auto& c : r.chunks()) {
        std::cout << absl::StrFormat("%8d %-8s %6d %8d %-20s %9s %d%s\n", c.chunk_id(),
                                     c.state() == v1::LEASED ? "leased" : "pending",
                                     c.times_trained(), c.samples_trained(),
                                     c.owner_peer_id().empty() ? "-" : c.owner_peer_id(),
                                     Time(c.deadline_unix_ms()), c.failed_completions(),
                                     c.bad() ? " BAD (unreadable)" : "");
      }
      req.set_page_token(r.next_page_token());
    } while (!req.page_token().empty());
    return absl::OkStatus();
  }
  if (cmd == "invite" && argc == 3) {
    auto token = AdminToken();
    if (!token.ok()) return token.status();
    auto ctx = dd::MakeCallContext();
    ctx->AddMetadata("x-dd-admin-token", *token);
    v1::AdminInviteRequest req;
    req.set_name(argv[2]);
    req.set_ttl_seconds(std::max(0, FLAGS_ttl_s));
    v1::AdminInviteResponse r;
    grpc::Status st = stub->AdminInvite(ctx.get(), req, &r);
    if (!st.ok()) return dd::FromGrpcStatus(st, "AdminInvite");
    // The invitation alone on stdout, so `ddctl invite alice > alice.token`
    // gives the file the volunteer passes as --auth_token_file.
    std::cout << r.invitation() << "\n";
    std::cerr << "invitation for " << argv[2] << ", valid until "
              << absl::FormatTime(absl::FromUnixMillis(r.expires_unix_ms())) << "\n";
    return absl::OkStatus();
  }
  if ((cmd == "release" || cmd == "evict") && argc == 3) {
    auto token = AdminToken();
    if (!token.ok()) return token.status();
    auto ctx = dd::MakeCallContext();
    ctx->AddMetadata("x-dd-admin-token", *token);
    if (cmd == "release") {
      uint64_t id;
      if (!absl::SimpleAtoi(argv[2], &id)) return absl::InvalidArgumentError("bad chunk id");
      v1::AdminReleaseChunkRequest req;
      req.set_chunk_id(id);
      v1::AdminReleaseChunkResponse r;
      grpc::Status st = stub->AdminReleaseChunk(ctx.get(), req, &r);
      if (!st.ok()) return dd::FromGrpcStatus(st, "AdminReleaseChunk");
      std::cout << "chunk " << id << (r.was_leased() ? " released\n" : " was not leased\n");
    } else {
      v1::AdminEvictPeerRequest req;
      req.set_peer_id(argv[2]);
      req.set_ban_seconds(std::max(0, FLAGS_ban_s));
      v1::AdminEvictPeerResponse r;
      grpc::Status st = stub->AdminEvictPeer(ctx.get(), req, &r);
      if (!st.ok()) return dd::FromGrpcStatus(st, "AdminEvictPeer");
      std::cout << "evicted " << argv[2] << "; " << r.released_chunks() << " leases released\n";
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError("usage: ddctl status|peers|chunks|history|release ID|evict PEER|invite NAME");
}

}  // namespace

int main(int argc, char** argv) {
  return dd::RunMain("ddctl --coordinator=HOST:PORT status|peers|chunks|release ID|evict PEER",
                     argc, argv, Run);
}
