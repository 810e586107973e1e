// libFuzzer target for the dataset service's request handling, over real
// loopback gRPC: one DatasetService (loose files, a tar shard and a 256 KiB
// one; 16 KiB frames, 4 streams per client) serves a sequence of calls from
// the input:
// GetInfo, ListChunks and ReadChunk with any request bytes, with the run
// token, a wrong token or none, each stream read for some frames and then
// read to its end or cancelled, or held unread to the input's end (a
// stalled reader: auth byte's bit 7). Input: records of [op byte][auth byte]
// [2-byte length][request bytes]; the op's low 2 bits name the RPC, and for
// ReadChunk bits 2-6 the frames to read before stopping (0: all) and bit 7
// whether to cancel then. Checked: every call ends with one of its
// documented codes (never INTERNAL or UNKNOWN); calls without the token
// are UNAUTHENTICATED; a read that ends OK delivered exactly the chunk's
// bytes from its offset (frame offsets in order, chunk_size right); and
// once the input's calls are over, every stream slot is free again.
// tools/fuzz/run_fuzzers.sh builds it with clang; dataset_service_fuzz_test
// runs it under Bazel on generated input.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <glog/logging.h>
#include <google/protobuf/stubs/logging.h>
#include <grpcpp/create_channel.h>

#include "absl/time/clock.h"
#include "common/rpc/channel.h"
#include "common/rpc/server.h"
#include "common/testing/fuzz_scripts.h"
#include "services/dataset/dataset_client.h"
#include "services/dataset/dataset_service.h"
#include "services/dataset/indexer.h"
#include "services/dataset/testing/test_dataset.h"

namespace {

using namespace dd;           // NOLINT: a fuzz target
using namespace dd::dataset;  // NOLINT

constexpr char kToken[] = "dataset-fuzz-token-0123456789";

void Check(bool ok, const std::string& what) {
  if (!ok) {
    fprintf(stderr, "dataset_service_fuzz: %s\n", what.c_str());
    abort();
  }
}

// The server, built once per process; the expected bytes of every chunk,
// downloaded once through the verifying client.
struct Served {
  std::string root;
  std::unique_ptr<DatasetCatalog> catalog;
  std::unique_ptr<DatasetService> service;
  std::unique_ptr<ServiceHost> host;
  std::unique_ptr<v1::Dataset::Stub> stub;
  std::map<uint64_t, std::string> chunks;
};

Served& Server() {
  static Served* s = [] {
    // Request bytes that are not valid UTF-8 in a string field do not
    // parse; protobuf would log each one.
    google::protobuf::SetLogHandler(nullptr);
    FLAGS_minloglevel = google::GLOG_ERROR;
    auto* s = new Served();
    // Outside Bazel too (libFuzzer runs it directly): a fresh folder of
    // its own under TEST_TMPDIR or /tmp.
    const char* tmp = std::getenv("TEST_TMPDIR");
    std::string pattern = std::string(tmp != nullptr ? tmp : "/tmp") + "/dd-dataset-fuzz.XXXXXX";
    Check(mkdtemp(pattern.data()) != nullptr, "mkdtemp");
    s->root = pattern;
    for (int i = 0; i < 6; ++i) {
      dataset::testing::WritePair(s->root + "/d" + std::to_string(i % 2), "s" + std::to_string(i),
                         i % 2 ? "png" : "jpg", i);
    }
    dataset::testing::WriteTar(s->root + "/shard.tar", dataset::testing::ShardMembers(100, 3));
    // A chunk larger than a stream's flow-control window: held readers of
    // it keep their slots (the others' streams complete into the window).
    auto big = dataset::testing::ShardMembers(200, 1);
    big[1].second = std::string(256 << 10, 'b');
    dataset::testing::WriteTar(s->root + "/big.tar", big);
    auto m = BuildManifest({s->root, "", 4});
    Check(m.ok(), "manifest: " + m.status().ToString());
    s->catalog = std::make_unique<DatasetCatalog>(std::move(*m), CatalogMetadata{"fuzz", ""}, 0);
    DatasetServiceOptions o;
    o.frame_bytes = 16 << 10;
    o.max_reads_per_client = 4;
    o.max_concurrent_reads = 8;
    s->service = std::make_unique<DatasetService>(s->catalog.get(), o);
    ServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.security.auth_token = kToken;
    auto host = ServiceHost::Start(options, {s->service.get()});
    Check(host.ok(), "server: " + host.status().ToString());
    s->host = std::move(*host);
    s->host->SetServing(true);
    const std::string target = "127.0.0.1:" + std::to_string(s->host->port());
    SecurityConfig token;
    token.auth_token = kToken;
    DatasetClient client(*MakeChannel(target, token));
    auto chunks = client.ListAllChunks();
    Check(chunks.ok(), "list: " + chunks.status().ToString());
    for (const auto& c : *chunks) {
      const std::string path = s->root + "/chunk-" + std::to_string(c.chunk_id());
      Check(client.DownloadChunk(c, path).ok(), "download");
      std::ifstream in(path, std::ios::binary);
      std::stringstream bytes;
      bytes << in.rdbuf();
      s->chunks[c.chunk_id()] = bytes.str();
    }
    // Calls carry their token (or none) themselves. A small window and no
    // BDP probing: the service's writes to a reader that reads nothing stop.
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 << 10);
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    s->stub = v1::Dataset::NewStub(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
    // libFuzzer ends with exit(): stop the server first, or its threads
    // race OpenSSL's exit-time cleanup (whose handler, registered at its
    // first use above, runs after this one).
    atexit([] { Server().host->Shutdown(absl::Seconds(1)); });
    return s;
  }();
  return *s;
}

// What a call carries: the token, a wrong one, or none (the auth byte's
// low 7 bits; bit 7 marks a stalled reader).
enum class Token { kRight, kWrong, kNone };
Token TokenOf(uint8_t auth) { return static_cast<Token>((auth & 0x7f) % 3); }

std::unique_ptr<grpc::ClientContext> Context(uint8_t auth) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (TokenOf(auth) == Token::kRight) ctx->AddMetadata("authorization", std::string("Bearer ") + kToken);
  if (TokenOf(auth) == Token::kWrong) ctx->AddMetadata("authorization", "Bearer not-the-token");
  return ctx;
}

void ExpectCode(const grpc::Status& s, uint8_t auth, std::initializer_list<grpc::StatusCode> allowed,
                const char* rpc) {
  if (TokenOf(auth) != Token::kRight) {
    Check(s.error_code() == grpc::StatusCode::UNAUTHENTICATED,
          std::string(rpc) + " without the token: " + std::to_string(s.error_code()));
    return;
  }
  for (grpc::StatusCode c : allowed) {
    if (s.error_code() == c) return;
  }
  Check(false, std::string(rpc) + " answered " + std::to_string(s.error_code()) + ": " + s.error_message());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Served& s = Server();
  std::vector<std::pair<std::unique_ptr<grpc::ClientContext>,
                        std::unique_ptr<grpc::ClientReader<v1::ChunkFrame>>>>
      held;
  ::dd::testing::FuzzRecordReader input(data, size);
  ::dd::testing::FuzzRecordReader::Record call;
  for (int calls = 0; calls < 16 && input.Next(&call); ++calls) {
    const uint8_t op = call.op, auth = call.who;
    auto ctx = Context(auth);
    switch (op & 3) {  // 3: ReadChunk too
      case 0: {
        v1::GetInfoRequest r;
        if (!call.Parse(&r)) break;
        v1::DatasetInfo info;
        grpc::Status st = s.stub->GetInfo(ctx.get(), r, &info);
        ExpectCode(st, auth, {grpc::StatusCode::OK}, "GetInfo");
        if (st.ok()) Check(info.num_chunks() == s.chunks.size(), "GetInfo's chunk count");
        break;
      }
      case 1: {
        v1::ListChunksRequest r;
        if (!call.Parse(&r)) break;
        v1::ListChunksResponse page;
        grpc::Status st = s.stub->ListChunks(ctx.get(), r, &page);
        ExpectCode(st, auth, {grpc::StatusCode::OK, grpc::StatusCode::INVALID_ARGUMENT}, "ListChunks");
        if (st.ok()) {
          Check(page.total_chunks() == s.chunks.size(), "ListChunks' total");
          for (const auto& c : page.chunks()) {
            auto it = s.chunks.find(c.chunk_id());
            Check(it != s.chunks.end() && it->second.size() == c.size_bytes(), "a listed chunk's size");
          }
        }
        break;
      }
      case 2:
      case 3: {
        v1::ReadChunkRequest r;
        if (!call.Parse(&r)) break;
        // The op byte's high bits: frames to read before stopping (0: all),
        // and whether to cancel then rather than drain.
        const int frames = (op >> 2) & 0x1f;
        const bool cancel = (op & 0x80) != 0;
        auto reader = s.stub->ReadChunk(ctx.get(), r);
        if (auth & 0x80) {
          // A stalled reader: opened, never read, held to the input's end.
          held.push_back({std::move(ctx), std::move(reader)});
          break;
        }
        v1::ChunkFrame frame;
        std::string got;
        int read = 0;
        bool in_order = true;
        auto take = [&] {
          in_order = in_order && frame.offset() == r.offset() + got.size();
          got += frame.data();
          ++read;
        };
        while ((frames == 0 || read < frames) && reader->Read(&frame)) take();
        bool cancelled = false;
        if (frames != 0 && read == frames) {
          if (cancel) {
            ctx->TryCancel();
            cancelled = true;
          }
          while (reader->Read(&frame)) take();
        }
        grpc::Status st = reader->Finish();
        ExpectCode(st, auth,
                   {grpc::StatusCode::OK, grpc::StatusCode::NOT_FOUND, grpc::StatusCode::OUT_OF_RANGE,
                    grpc::StatusCode::RESOURCE_EXHAUSTED, grpc::StatusCode::CANCELLED},
                   "ReadChunk");
        if (st.error_code() == grpc::StatusCode::CANCELLED) Check(cancelled, "ReadChunk cancelled by the server");
        if (st.ok()) {
          auto it = s.chunks.find(r.chunk_id());
          Check(it != s.chunks.end(), "ReadChunk of an unknown chunk ended OK");
          Check(in_order, "ReadChunk's frame offsets out of order");
          Check(r.offset() <= it->second.size() && got == it->second.substr(r.offset()),
                "ReadChunk's bytes differ from the chunk's");
          Check(frame.data().empty() || frame.chunk_size() == it->second.size(), "ReadChunk's chunk_size");
        }
        break;
      }
    }
  }
  // Held streams end cancelled (or, if the server ended them first, with
  // one of ReadChunk's codes).
  for (auto& [ctx, reader] : held) {
    ctx->TryCancel();
    v1::ChunkFrame frame;
    while (reader->Read(&frame)) {
    }
    grpc::Status st = reader->Finish();
    Check(st.error_code() != grpc::StatusCode::INTERNAL && st.error_code() != grpc::StatusCode::UNKNOWN,
          "a held ReadChunk answered " + st.error_message());
  }
  // Every stream this input opened has ended: its slots come back. Within
  // 10 s (a loaded machine took over 1 s to run the cancellations once in a
  // campaign; the service's own idle timeout, 60 s, cannot mask a leak).
  for (int i = 0; i < 2000 && s.service->active_reads() != 0; ++i) absl::SleepFor(absl::Milliseconds(5));
  Check(s.service->active_reads() == 0, "a stream slot was not given back");
  return 0;
}
