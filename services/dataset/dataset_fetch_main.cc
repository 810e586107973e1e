// dataset_fetch: the dataset service from the command line.
//
//   dataset_fetch --server=HOST:PORT info
//   dataset_fetch --server=HOST:PORT list
//   dataset_fetch --server=HOST:PORT get CHUNK_ID OUT_FILE
//   dataset_fetch --server=HOST:PORT get-all OUT_DIR
//
// Downloads resume from OUT_FILE.partial and are verified (SHA-256) before
// OUT_FILE appears.
#include <filesystem>
#include <iostream>

#include <gflags/gflags.h>
#include <glog/logging.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "common/init/init.h"
#include "common/progress/progress_line.h"
#include "common/rpc/channel.h"
#include "common/rpc/security.h"
#include "services/dataset/dataset_client.h"

DEFINE_string(server, "127.0.0.1:50051", "Dataset server host:port.");
DEFINE_uint64(interrupt_after_bytes, 0,
              "Testing: drop each download attempt after this many bytes.");
DEFINE_int32(max_attempts, 10, "Attempts per chunk for transient errors.");

namespace {

using dd::dataset::DatasetClient;

absl::Status Get(DatasetClient& client, const dd::dataset::v1::ChunkInfo& chunk,
                 const std::string& out) {
  dd::dataset::DownloadOptions options;
  options.interrupt_after_bytes = FLAGS_interrupt_after_bytes;
  options.max_attempts = FLAGS_max_attempts;
  auto result = client.DownloadChunk(chunk, out, options);
  if (!result.ok()) return result.status();
  std::cout << absl::StrFormat("chunk %d -> %s: %d bytes, sha256 %s verified, %d attempt(s)%s\n",
                               chunk.chunk_id(), out, chunk.size_bytes(), chunk.sha256_hex(),
                               result->attempts, result->resumed ? ", resumed" : "")
            << std::flush;
  return absl::OkStatus();
}

absl::Status Run(int argc, char** argv) {
  if (argc < 2) return absl::InvalidArgumentError("usage: dataset_fetch info|list|get|get-all");
  auto security = dd::SecurityConfigFromFlags();
  if (!security.ok()) return security.status();
  auto channel = dd::MakeChannel(FLAGS_server, *security);
  if (!channel.ok()) return channel.status();
  DatasetClient client(*channel);
  std::string command = argv[1];
  if (command == "info") {
    auto info = client.GetInfo();
    if (!info.ok()) return info.status();
    std::cout << info->DebugString();
    return absl::OkStatus();
  }
  auto chunks = client.ListAllChunks();
  if (!chunks.ok()) return chunks.status();
  if (command == "list") {
    std::cout << absl::StrFormat("%8s %8s %12s  %-64s  %s\n", "chunk", "samples", "bytes",
                                 "sha256", "source");
    for (const auto& c : *chunks) {
      std::cout << absl::StrFormat("%8d %8d %12d  %-64s  %s\n", c.chunk_id(), c.num_samples(),
                                   c.size_bytes(), c.sha256_hex(), c.source());
    }
    return absl::OkStatus();
  }
  if (command == "get" && argc == 4) {
    uint64_t id;
    if (!absl::SimpleAtoi(argv[2], &id) || id >= chunks->size()) {
      return absl::NotFoundError(absl::StrCat("no chunk ", argv[2]));
    }
    return Get(client, (*chunks)[id], argv[3]);
  }
  if (command == "get-all" && argc == 3) {
    std::filesystem::create_directories(argv[2]);
    dd::ProgressLine progress("download", chunks->size(), "chunks");
    uint64_t bytes = 0, done = 0;
    for (const auto& c : *chunks) {
      absl::Status s = Get(client, c, absl::StrFormat("%s/chunk-%06d.tar", argv[2], c.chunk_id()));
      if (!s.ok()) return s;
      bytes += c.size_bytes();
      progress.Update(++done, bytes);
    }
    progress.Finish();
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError("usage: dataset_fetch info|list|get ID OUT|get-all DIR");
}

}  // namespace

int main(int argc, char** argv) {
  return dd::RunMain("dataset_fetch --server=HOST:PORT info|list|get ID OUT|get-all DIR", argc,
                     argv, Run);
}
