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

// Applies the keepalive, ping and message-size settings to a server.
inline void ApplyServerChannelSettings(grpc::ServerBuilder* builder) {
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
