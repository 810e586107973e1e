// make_shapes_dataset: writes a captioned synthetic dataset (coloured shapes on
// coloured backgrounds) as image + caption pairs or as WebDataset tar shards.
//
//   make_shapes_dataset --out_dir=/tmp/shapes --num_samples=512 --width=64 \
//       --height=64 --image_format=mixed --subdirs=4
//   make_shapes_dataset --out_dir=/tmp/shards --num_samples=512 --shard_size=128
#include <filesystem>
#include <iostream>

#include <gflags/gflags.h>
#include <glog/logging.h>

#include "absl/strings/str_format.h"
#include "common/image/image_codec.h"
#include "common/init/init.h"
#include "common/io/file_util.h"
#include "common/tar/tar_format.h"
#include "trainer/data/synthetic_shapes.h"

DEFINE_string(out_dir, "", "Folder to write (created if missing).");
DEFINE_uint64(num_samples, 256, "Number of samples.");
DEFINE_int32(width, 64, "Image width in pixels.");
DEFINE_int32(height, 64, "Image height in pixels.");
DEFINE_uint64(seed, 0, "Seed; the same seed gives the same dataset.");
DEFINE_string(image_format, "jpg", "jpg, png, or mixed (alternating).");
DEFINE_uint64(shard_size, 0, "Samples per WebDataset .tar shard; 0 writes loose files.");
DEFINE_int32(subdirs, 1, "Spread loose files over this many subfolders.");

namespace {

absl::Status Run() {
  if (FLAGS_out_dir.empty()) return absl::InvalidArgumentError("--out_dir is required");
  if (FLAGS_width <= 0 || FLAGS_height <= 0) return absl::InvalidArgumentError("bad size");
  std::error_code ec;
  std::filesystem::create_directories(FLAGS_out_dir, ec);
  if (ec) return absl::PermissionDeniedError("cannot create " + FLAGS_out_dir);
  std::string shard;
  uint64_t shard_index = 0;
  auto flush_shard = [&]() -> absl::Status {
    if (shard.empty()) return absl::OkStatus();
    shard.append(dd::tar::kTrailerSize, '\0');
    absl::Status s = dd::WriteFileAtomically(
        absl::StrFormat("%s/shard-%05d.tar", FLAGS_out_dir, shard_index++), shard);
    shard.clear();
    return s;
  };
  for (uint64_t i = 0; i < FLAGS_num_samples; ++i) {
    dd::ShapeSample sample = dd::RenderShapeSample(FLAGS_seed, i, FLAGS_width, FLAGS_height);
    bool png = FLAGS_image_format == "png" || (FLAGS_image_format == "mixed" && i % 2 == 1);
    auto encoded = png ? dd::EncodePng(sample.image) : dd::EncodeJpeg(sample.image, 92);
    if (!encoded.ok()) return encoded.status();
    std::string key = absl::StrFormat("%09d", i);
    std::string ext = png ? "png" : "jpg";
    if (FLAGS_shard_size > 0) {
      for (const auto& [name, data] :
           {std::pair<std::string, const std::string&>{key + "." + ext, *encoded},
            std::pair<std::string, const std::string&>{key + ".txt", sample.caption}}) {
        auto header = dd::tar::MakeFileHeader(name, data.size());
        if (!header.ok()) return header.status();
        shard += *header;
        shard += data;
        shard.append(dd::tar::PaddingFor(data.size()), '\0');
      }
      if ((i + 1) % FLAGS_shard_size == 0) {
        if (absl::Status s = flush_shard(); !s.ok()) return s;
      }
    } else {
      std::string dir = FLAGS_out_dir;
      if (FLAGS_subdirs > 1) {
        dir = absl::StrFormat("%s/part-%02d", FLAGS_out_dir, i % FLAGS_subdirs);
        std::filesystem::create_directories(dir, ec);
      }
      if (absl::Status s = dd::WriteFileAtomically(dir + "/" + key + "." + ext, *encoded);
          !s.ok()) {
        return s;
      }
      if (absl::Status s = dd::WriteFileAtomically(dir + "/" + key + ".txt", sample.caption);
          !s.ok()) {
        return s;
      }
    }
  }
  return flush_shard();
}

}  // namespace

int main(int argc, char** argv) {
  return dd::RunMain("make_shapes_dataset --out_dir=DIR [--num_samples=N] [--shard_size=K]", argc,
                     argv, [](int, char**) {
                       absl::Status s = Run();
                       if (s.ok()) {
                         std::cout << "wrote " << FLAGS_num_samples << " samples to "
                                   << FLAGS_out_dir << "\n";
                       }
                       return s;
                     });
}
