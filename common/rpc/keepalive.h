// Keepalive and message-size settings shared by every server and client.
//
// Both sides live in this one header so they cannot drift apart: a client
// pinging more often than the server permits receives GOAWAY
// ("too_many_pings") and loses its streams.
//
// Values: peers talk across home routers and NATs that drop idle TCP flows
// after a few minutes, so clients ping every 30 s, even with no call active
// (leases and heartbeats leave long idle gaps), and give up after 10 s without
// an answer. The server accepts pings as often as every 10 s.
#ifndef COMMON_RPC_KEEPALIVE_H_
#define COMMON_RPC_KEEPALIVE_H_

#include <grpcpp/resource_quota.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/support/channel_arguments.h>

namespace dd {

inline constexpr int kKeepaliveTimeMs = 30000;
inline constexpr int kKeepaliveTimeoutMs = 10000;
inline constexpr int kServerMinPingIntervalMs = 10000;

// Largest message any server accepts or any client receives. Bulk data
// (chunks, tensors) travels as streams of frames of at most 1 MiB, so 4 MiB
// (gRPC's default) leaves room for metadata and is never raised to ship blobs.
inline constexpr int kMaxMessageBytes = 4 << 20;

// Per-stream receive window: a whole frame or part (up to 4 MiB) may be in
// flight on one stream without waiting for WINDOW_UPDATEs, which matters on
// links whose round trip grows with queueing (bulk chunk and gradient
// transfers).
inline constexpr int kStreamLookaheadBytes = 8 << 20;

// Bounds on what one client connection can hold on a server: streams open
// at once (a butterfly member keeps a few parts in flight per reducer; a
// flood of streams is refused by HTTP/2 instead of queued), how long an idle
// connection is kept, and a maximum age after which the client reconnects
// (in-flight calls get a grace period), so no connection holds server
// resources forever.
inline constexpr int kMaxConcurrentStreamsPerConnection = 256;
inline constexpr int kMaxConnectionIdleMs = 10 * 60 * 1000;
inline constexpr int kMaxConnectionAgeMs = 60 * 60 * 1000;
inline constexpr int kMaxConnectionAgeGraceMs = 5 * 60 * 1000;

// The memory gRPC may hold for one server's connections and calls (read
// buffers, queued messages): beyond it gRPC shrinks flow-control windows
// and refuses new streams instead of growing, so a flood of connections or
// streams from token holders cannot exhaust the process's memory. 1 GiB is
// a bound chosen well above what the legitimate load should need (a
// reducer's parts in flight from a round's members, a few MiB each; the
// dataset's 64 streams of 1 MiB frames), not a measured peak.
inline constexpr size_t kServerMemoryQuotaBytes = size_t{1} << 30;

// Applies the keepalive, ping, message-size and connection bounds to a
// server.
inline void ApplyServerChannelSettings(grpc::ServerBuilder* builder) {
  builder->AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, kMaxConcurrentStreamsPerConnection);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, kMaxConnectionIdleMs);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, kMaxConnectionAgeMs);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, kMaxConnectionAgeGraceMs);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveTimeMs);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder->AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
      kServerMinPingIntervalMs);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  builder->SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder->SetMaxSendMessageSize(kMaxMessageBytes);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, kStreamLookaheadBytes);
  grpc::ResourceQuota quota("dd-server");
  quota.Resize(kServerMemoryQuotaBytes);
  builder->SetResourceQuota(quota);
}

// Returns channel arguments with the matching client-side settings.
inline grpc::ChannelArguments ClientChannelArguments() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveTimeMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, kStreamLookaheadBytes);
  return args;
}

}  // namespace dd

#endif  // COMMON_RPC_KEEPALIVE_H_
