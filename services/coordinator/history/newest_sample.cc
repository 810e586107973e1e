#include "services/coordinator/history/newest_sample.h"

#include <utility>
#include <vector>

#include <glog/logging.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/image/image_codec.h"
#include "common/image/image_decoder.h"
#include "common/io/file_util.h"
#include "common/status/status_macros.h"

namespace dd::coordinator {
namespace {

constexpr char kPngFile[] = "/newest_sample.png";
constexpr char kMetaFile[] = "/newest_sample.meta";

// "step peer_id unix_ms width height"
std::string Meta(const SampleGrid& g) {
  return absl::StrCat(g.step, " ", g.peer_id, " ", g.unix_ms, " ", g.width, " ", g.height, "\n");
}

bool ParseMeta(absl::string_view line, SampleGrid* g) {
  std::vector<std::string> f = absl::StrSplit(absl::StripAsciiWhitespace(line), ' ');
  if (f.size() != 5 || f[1].empty()) return false;
  g->peer_id = f[1];
  return absl::SimpleAtoi(f[0], &g->step) && absl::SimpleAtoi(f[2], &g->unix_ms) &&
         absl::SimpleAtoi(f[3], &g->width) && absl::SimpleAtoi(f[4], &g->height);
}

}  // namespace

std::unique_ptr<NewestSample> NewestSample::Open(std::string dir) {
  std::unique_ptr<NewestSample> store(new NewestSample(std::move(dir)));
  if (store->dir_.empty()) return store;
  auto meta = ReadFileToString(store->dir_ + kMetaFile, 4096);
  if (!meta.ok()) return store;  // none yet
  auto png = ReadFileToString(store->dir_ + kPngFile, kMaxSamplePngBytes * 2);
  auto grid = std::make_shared<SampleGrid>();
  if (!png.ok() || !ParseMeta(*meta, grid.get())) {
    LOG(WARNING) << "the newest sample grid in " << store->dir_ << " is unreadable; none kept";
    return store;
  }
  grid->png = std::move(*png);
  absl::MutexLock lock(&store->mu_);
  store->grid_ = std::move(grid);
  return store;
}

absl::StatusOr<bool> NewestSample::Offer(uint64_t step, const std::string& peer_id,
                                         absl::string_view png, absl::Time now) {
  if (png.size() > kMaxSamplePngBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("the sample PNG has ", png.size(), " bytes; at most ", kMaxSamplePngBytes));
  }
  {
    absl::MutexLock lock(&mu_);
    if (grid_ != nullptr && grid_->step >= step) return false;
  }
  if (SniffImageFormat(png) != ImageFormat::kPng) {
    return absl::InvalidArgumentError("the sample is not a PNG");
  }
  DecodeOptions options;
  options.max_pixels = kMaxSamplePixels;
  auto image = DecodeImage(png, options);
  if (!image.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("the sample PNG: ", image.status().message()));
  }
  auto grid = std::make_shared<SampleGrid>();
  grid->step = step;
  grid->peer_id = peer_id;
  grid->unix_ms = absl::ToUnixMillis(now);
  grid->width = image->width;
  grid->height = image->height;
  ASSIGN_OR_RETURN(grid->png, EncodePng(*image));
  absl::MutexLock lock(&mu_);
  if (grid_ != nullptr && grid_->step >= step) return false;  // a newer one raced in
  if (!dir_.empty()) {
    // The image first: a crash between the two leaves an older step's meta
    // beside it, which a newer upload replaces.
    RETURN_IF_ERROR(WriteFileAtomically(dir_ + kPngFile, grid->png));
    RETURN_IF_ERROR(WriteFileAtomically(dir_ + kMetaFile, Meta(*grid)));
  }
  grid_ = std::move(grid);
  return true;
}

std::shared_ptr<const SampleGrid> NewestSample::Get() const {
  absl::MutexLock lock(&mu_);
  return grid_;
}

}  // namespace dd::coordinator
