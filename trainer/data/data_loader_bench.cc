// data_loader_bench: decoded-and-bucketed images per second per core at
// 512 px from JPEGs, against plain decoding of the same files in the same
// run (the ratio is what to compare across machines).
//
//   bazel run -c opt //trainer/data:data_loader_bench -- --images=200
#include <ATen/Parallel.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include <gflags/gflags.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/image/image_codec.h"
#include "common/init/init.h"
#include "trainer/data/data_loader.h"
#include "common/image/image_decoder.h"
#include "trainer/data/sample_source.h"
#include "trainer/data/synthetic_shapes.h"

DEFINE_int32(images, 200, "JPEG files to generate.");
DEFINE_int32(resolution, 512, "Training resolution (bucket area).");
DEFINE_string(dir, "", "Where to write the JPEGs (default: a temporary folder).");

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

absl::Status Run(int, char**) {
  std::string dir = FLAGS_dir.empty() ? (fs::temp_directory_path() / "dd_loader_bench").string()
                                      : FLAGS_dir;
  // The error_code forms: the throwing remove_all crashed (SIGSEGV inside
  // libstdc++) in the bundle's build on the GPU machine, where the
  // error_code forms the checkpoint writer uses ran.
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (fs::create_directories(dir, ec); ec) {
    return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  }
  // Camera-like sizes and aspect ratios (3:2, 4:3, 1:1, 2:3, 16:9), with
  // noise so the JPEGs are as large as photos of that size.
  const int sizes[5][2] = {{768, 512}, {683, 512}, {640, 640}, {512, 768}, {910, 512}};
  std::mt19937 rng(1);
  std::normal_distribution<float> noise(0, 12);
  std::vector<std::string> files;
  uint64_t total_bytes = 0;
  for (int i = 0; i < FLAGS_images; ++i) {
    dd::ShapeSample s = dd::RenderShapeSample(9, i, sizes[i % 5][0], sizes[i % 5][1]);
    for (auto& p : s.image.pixels) p = static_cast<uint8_t>(std::clamp(p + noise(rng), 0.f, 255.f));
    auto jpeg = dd::EncodeJpeg(s.image, 90);
    if (!jpeg.ok()) return jpeg.status();
    std::string path = absl::StrFormat("%s/%05d.jpg", dir, i);
    std::ofstream(path, std::ios::binary) << *jpeg;
    std::ofstream(absl::StrFormat("%s/%05d.txt", dir, i)) << s.caption;
    files.push_back(path);
    total_bytes += jpeg->size();
  }
  std::cout << absl::StrFormat("%d JPEGs, %.1f KB average, in %s\n", FLAGS_images,
                               total_bytes / 1024.0 / FLAGS_images, dir);
  at::set_num_threads(1);

  // Baseline: read + decode only, one thread.
  auto t0 = Clock::now();
  for (const auto& f : files) {
    auto bytes = dd::data::ReadRange({f, 0, fs::file_size(f)});
    if (!bytes.ok()) return bytes.status();
    auto img = dd::DecodeImage(*bytes);
    if (!img.ok()) return img.status();
  }
  double decode_s = Seconds(t0);
  double decode_rate = files.size() / decode_s;
  std::cout << absl::StrFormat("%-44s %8.1f images/s\n", "decode only (1 thread)", decode_rate);

  auto listing = dd::data::ListSamples(dir);
  if (!listing.ok()) return listing.status();
  for (int workers : {1, 2}) {
    for (bool square : {false, true}) {
      dd::data::LoaderOptions o;
      o.batch_size = 8;
      o.buckets.resolution = FLAGS_resolution;
      o.buckets.square_only = square;
      o.random_crop = true;
      o.random_flip = true;
      o.max_epochs = 1;
      o.num_workers = workers;
      auto loader = dd::data::DataLoader::Start(listing->samples, o);
      if (!loader.ok()) return loader.status();
      t0 = Clock::now();
      int64_t n = 0;
      while (true) {
        auto b = (*loader)->Next();
        if (!b.ok()) return b.status();
        if (!b->has_value()) break;
        n += (*b)->pixels.size(0);
      }
      double rate = n / Seconds(t0);
      std::cout << absl::StrFormat("%-44s %8.1f images/s  %.1f per worker  ratio %.2f\n",
                                   absl::StrFormat("loader %s, %d worker(s)",
                                                   square ? "square crop" : "bucketed", workers),
                                   rate, rate / workers, rate / workers / decode_rate);
    }
  }
  fs::remove_all(dir, ec);
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) { return dd::RunMain("data_loader_bench", argc, argv, Run); }
