// Benchmark: chunk streaming throughput over loopback gRPC with 1 and 8
// concurrent clients, against reading the same bytes from disk in the same
// run (page cache warm for both, so the ratio is the service's overhead).
//
//   bazel run -c opt //services/dataset:dataset_stream_bench -- --samples=256
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <random>
#include <thread>

#include <gflags/gflags.h>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/image/image_codec.h"
#include "common/init/init.h"
#include "common/io/file_util.h"
#include "common/rpc/channel.h"
#include "common/rpc/server.h"
#include "services/dataset/catalog.h"
#include "services/dataset/dataset_client.h"
#include "services/dataset/dataset_service.h"
#include "services/dataset/indexer.h"

DEFINE_int32(samples, 256, "Images in the generated dataset.");
DEFINE_int32(side, 512, "Image side in pixels (noise JPEGs, ~realistic sizes).");
DEFINE_uint32(chunk_size, 64, "Samples per chunk.");
DEFINE_int32(repeats, 3, "Passes over the dataset per measurement.");
DEFINE_string(dir, "", "Where to generate the dataset (default: a temp folder).");

namespace {

namespace v1 = distdiff::dataset::v1;
constexpr char kToken[] = "benchmark-token-0123456789abcdef";

double Mb(uint64_t bytes) { return bytes / 1e6; }

// Baseline: read every source file of every chunk with read(2).
uint64_t ReadSourcesFromDisk(const distdiff::dataset::internal::Manifest& m) {
  uint64_t total = 0;
  std::vector<char> buf(1 << 20);
  for (const auto& f : m.files()) {
    int fd = ::open(f.read_path().c_str(), O_RDONLY);
    ssize_t n;
    while ((n = ::read(fd, buf.data(), buf.size())) > 0) total += n;
    ::close(fd);
  }
  return total;
}

// One client streaming every chunk, discarding the bytes.
uint64_t StreamAll(v1::Dataset::Stub* stub, int num_chunks) {
  uint64_t total = 0;
  for (int id = 0; id < num_chunks; ++id) {
    grpc::ClientContext ctx;
    v1::ReadChunkRequest req;
    req.set_chunk_id(id);
    auto reader = stub->ReadChunk(&ctx, req);
    v1::ChunkFrame frame;
    while (reader->Read(&frame)) total += frame.data().size();
    if (!reader->Finish().ok()) std::abort();
  }
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  dd::InitProcess("dataset_stream_bench", &argc, &argv);
  std::string dir = FLAGS_dir.empty()
                        ? (std::filesystem::temp_directory_path() / "dd_stream_bench").string()
                        : FLAGS_dir;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir + "/data");
  std::mt19937 rng(1);
  for (int i = 0; i < FLAGS_samples; ++i) {
    dd::RgbImage img{FLAGS_side, FLAGS_side,
                     std::vector<uint8_t>(size_t(FLAGS_side) * FLAGS_side * 3)};
    // Smooth noise: compresses like a photo (~100-300 KB at 512 px).
    for (size_t p = 0; p < img.pixels.size(); ++p) img.pixels[p] = (p / 3 % 7) * 20 + rng() % 64;
    (void)dd::WriteFileAtomically(absl::StrFormat("%s/data/%05d.jpg", dir, i),
                                  *dd::EncodeJpeg(img, 90));
    (void)dd::WriteFileAtomically(absl::StrFormat("%s/data/%05d.txt", dir, i), "a caption");
  }
  auto manifest = dd::dataset::BuildManifest({dir + "/data", "", FLAGS_chunk_size});
  if (!manifest.ok()) {
    std::cerr << manifest.status() << "\n";
    return 1;
  }
  uint64_t chunk_bytes = 0;
  for (const auto& c : manifest->chunks()) chunk_bytes += c.size_bytes();
  int num_chunks = manifest->chunks_size();
  dd::dataset::DatasetCatalog catalog(*manifest, {}, 0);
  dd::dataset::DatasetService service(&catalog, {});
  dd::ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.security.auth_token = kToken;
  auto host = dd::ServiceHost::Start(options, {&service});
  if (!host.ok()) return 1;
  dd::SecurityConfig client_security;
  client_security.auth_token = kToken;
  std::string target = absl::StrFormat("127.0.0.1:%d", (*host)->port());

  auto time_it = [&](auto&& fn) {
    fn();  // warm-up (page cache, connections)
    absl::Time t0 = absl::Now();
    uint64_t bytes = 0;
    for (int r = 0; r < FLAGS_repeats; ++r) bytes += fn();
    return Mb(bytes) / absl::ToDoubleSeconds(absl::Now() - t0);
  };
  double disk = time_it([&] { return ReadSourcesFromDisk(*manifest); });
  double reader = time_it([&] {
    uint64_t total = 0;
    std::vector<char> buf(1 << 20);
    for (int id = 0; id < num_chunks; ++id) {
      auto r = dd::dataset::ChunkReader::Open(*manifest, id);
      for (uint64_t off = 0; off < (*r)->size();) off += *(*r)->ReadAt(off, buf.data(), buf.size());
      total += (*r)->size();
    }
    return total;
  });
  auto channel = *dd::MakeChannel(target, client_security);
  auto stub = v1::Dataset::NewStub(channel);
  double one = time_it([&] { return StreamAll(stub.get(), num_chunks); });
  double eight = time_it([&] {
    std::vector<std::thread> threads;
    std::atomic<uint64_t> total{0};
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] {
        auto ch = *dd::MakeChannel(target, client_security);
        auto s = v1::Dataset::NewStub(ch);
        total += StreamAll(s.get(), num_chunks);
      });
    }
    for (auto& t : threads) t.join();
    return total.load();
  });
  dd::dataset::DatasetClient client(channel);
  auto chunks = *client.ListAllChunks();
  double verified = time_it([&] {
    uint64_t total = 0;
    for (const auto& c : chunks) {
      std::string path = dir + "/dl.tar";
      std::filesystem::remove(path);
      if (!client.DownloadChunk(c, path).ok()) std::abort();
      total += c.size_bytes();
    }
    return total;
  });
  (*host)->Shutdown(absl::Seconds(1));
  std::cout << absl::StrFormat(
      "dataset: %d samples, %d chunks, %.1f MB of chunks (%d x %d px JPEG)\n", FLAGS_samples,
      num_chunks, Mb(chunk_bytes), FLAGS_side, FLAGS_side);
  std::cout << absl::StrFormat("%-44s %10s %8s\n", "measurement", "MB/s", "ratio");
  auto row = [&](const char* name, double v) {
    std::cout << absl::StrFormat("%-44s %10.1f %8.2f\n", name, v, v / disk);
  };
  row("baseline: read(2) of the source files", disk);
  row("ChunkReader (tar framing, in process)", reader);
  row("gRPC ReadChunk, 1 client (loopback)", one);
  row("gRPC ReadChunk, 8 clients (aggregate)", eight);
  row("DatasetClient::DownloadChunk (write+verify)", verified);
  std::filesystem::remove_all(dir);
  return 0;
}
