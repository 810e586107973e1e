#include "trainer/data/data_loader.h"

#include <webp/encode.h>

#include <filesystem>
#include <fstream>

#include "common/image/image_codec.h"
#include "gtest/gtest.h"
#include "trainer/data/synthetic_shapes.h"

namespace dd::data {
namespace {

namespace fs = std::filesystem;

void Write(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string Webp(const RgbImage& img) {
  uint8_t* out = nullptr;
  size_t size = WebPEncodeLosslessRGB(img.pixels.data(), img.width, img.height, img.width * 3, &out);
  std::string s(reinterpret_cast<char*>(out), size);
  WebPFree(out);
  return s;
}

// 24 good images in three aspect ratios and three formats, plus a truncated
// JPEG, a zero-byte file, a 1x1 and a 10000x10 image.
std::string MakeDataset(const std::string& name) {
  std::string d = std::string(getenv("TEST_TMPDIR")) + "/" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  const int sizes[3][2] = {{64, 64}, {128, 48}, {48, 128}};
  for (int i = 0; i < 24; ++i) {
    ShapeSample s = RenderShapeSample(3, i, sizes[i % 3][0], sizes[i % 3][1]);
    std::string stem = d + "/img" + std::to_string(100 + i);
    if (i % 4 == 0) Write(stem + ".png", *EncodePng(s.image));
    else if (i % 4 == 1) Write(stem + ".webp", Webp(s.image));
    else Write(stem + ".jpg", *EncodeJpeg(s.image, 90));
    Write(stem + ".txt", s.caption);
  }
  std::string jpeg = *EncodeJpeg(RenderShapeSample(3, 99, 64, 64).image, 90);
  Write(d + "/truncated.jpg", jpeg.substr(0, jpeg.size() / 2));
  Write(d + "/truncated.txt", "never trained");
  Write(d + "/zero.png", "");
  Write(d + "/tiny.png", *EncodePng(RenderShapeSample(3, 7, 1, 1).image));
  Write(d + "/tiny.txt", "bad \xFF utf8");
  Write(d + "/strip.jpg", *EncodeJpeg(RenderShapeSample(3, 8, 10000, 10).image, 90));
  return d;
}

LoaderOptions Options() {
  LoaderOptions o;
  o.batch_size = 4;
  o.buckets.resolution = 64;
  o.buckets.step = 32;
  o.random_crop = true;
  o.random_flip = true;
  o.captions.dropout = 0.2;
  o.seed = 11;
  o.max_epochs = 2;
  o.num_workers = 3;
  o.prefetch_batches = 2;
  return o;
}

std::vector<Batch> Drain(DataLoader& loader, int limit = 1 << 30) {
  std::vector<Batch> out;
  while (static_cast<int>(out.size()) < limit) {
    auto b = loader.Next();
    EXPECT_TRUE(b.ok()) << b.status();
    if (!b.ok() || !b->has_value()) break;
    out.push_back(std::move(**b));
  }
  return out;
}

void ExpectSame(const Batch& a, const Batch& b) {
  EXPECT_EQ(a.keys, b.keys);
  EXPECT_EQ(a.captions, b.captions);
  ASSERT_EQ(a.pixels.sizes(), b.pixels.sizes());
  EXPECT_TRUE(at::equal(a.pixels, b.pixels));
  EXPECT_TRUE(at::equal(a.crop_top_left, b.crop_top_left));
  EXPECT_EQ(a.position, b.position);
}

TEST(DataLoader, BatchesComeFromOneBucketAndBadFilesAreSkipped) {
  auto listing = ListSamples(MakeDataset("loader1"));
  ASSERT_TRUE(listing.ok()) << listing.status();
  ASSERT_EQ(listing->samples.size(), 28u);
  auto loader = DataLoader::Start(listing->samples, Options());
  ASSERT_TRUE(loader.ok()) << loader.status();
  std::vector<Batch> batches = Drain(**loader);
  int64_t samples = 0;
  std::set<std::pair<int64_t, int64_t>> shapes;
  for (const Batch& b : batches) {
    ASSERT_EQ(b.pixels.dim(), 4);
    EXPECT_LE(b.pixels.size(0), 4);
    EXPECT_EQ(b.pixels.size(0), static_cast<int64_t>(b.captions.size()));
    EXPECT_GE(b.pixels.min().item<float>(), -1.0f);
    EXPECT_LE(b.pixels.max().item<float>(), 1.0f);
    EXPECT_LE(b.pixels.size(2) * b.pixels.size(3), 64 * 64);
    shapes.insert({b.pixels.size(2), b.pixels.size(3)});
    samples += b.pixels.size(0);
    for (int64_t i = 0; i < b.pixels.size(0); ++i) {
      EXPECT_NE(b.keys[i], "truncated");
      EXPECT_NE(b.keys[i], "zero");
      if (b.keys[i] == "strip") {
        EXPECT_EQ(b.original_sizes[i][1].item<int64_t>(), 10000);
        EXPECT_EQ(b.pixels.size(3), 128);  // the widest bucket
      }
      if (b.keys[i] == "tiny") {
        EXPECT_TRUE(b.captions[i].empty() || b.captions[i] == "bad \xEF\xBF\xBD utf8");
      }
    }
  }
  EXPECT_GE(shapes.size(), 3u);          // square, wide, tall buckets
  EXPECT_EQ(samples, 2 * 26);            // two epochs of the 26 decodable samples
  LoaderStats stats = (*loader)->stats();
  EXPECT_EQ(stats.skipped, 4);           // truncated + zero-byte, twice
  EXPECT_EQ(stats.samples, 52);
  EXPECT_FALSE(stats.skip_notes.empty());
}

TEST(DataLoader, DeterministicWhateverTheThreads) {
  auto listing = ListSamples(MakeDataset("loader2"));
  ASSERT_TRUE(listing.ok());
  LoaderOptions one = Options();
  one.num_workers = 1;
  LoaderOptions many = Options();
  many.num_workers = 4;
  auto a = Drain(**DataLoader::Start(listing->samples, one));
  auto b = Drain(**DataLoader::Start(listing->samples, many));
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ExpectSame(a[i], b[i]);
  LoaderOptions other = Options();
  other.seed = 12;
  auto c = Drain(**DataLoader::Start(listing->samples, other));
  bool differs = c.size() != a.size();
  for (size_t i = 0; !differs && i < a.size(); ++i) differs = a[i].keys != c[i].keys;
  EXPECT_TRUE(differs);
}

TEST(DataLoader, ResumeFromAnyPositionGivesTheSameBatches) {
  auto listing = ListSamples(MakeDataset("loader3"));
  ASSERT_TRUE(listing.ok());
  auto all = Drain(**DataLoader::Start(listing->samples, Options()));
  ASSERT_GT(all.size(), 8u);
  for (size_t cut : {size_t{1}, size_t{3}, all.size() / 2, all.size() - 1}) {
    auto position = DataPosition::Parse(all[cut - 1].position.Serialize());
    ASSERT_TRUE(position.ok());
    auto rest = Drain(**DataLoader::Start(listing->samples, Options(), *position));
    ASSERT_EQ(rest.size(), all.size() - cut) << "cut " << cut;
    for (size_t i = 0; i < rest.size(); ++i) ExpectSame(rest[i], all[cut + i]);
  }
}

TEST(DataLoader, NothingDecodableIsAnErrorAndBadOptionsAreRefused) {
  std::string d = std::string(getenv("TEST_TMPDIR")) + "/loader_bad";
  fs::create_directories(d);
  Write(d + "/a.jpg", "garbage");
  Write(d + "/b.png", "");
  auto listing = ListSamples(d);
  ASSERT_TRUE(listing.ok());
  auto loader = DataLoader::Start(listing->samples, Options());
  ASSERT_TRUE(loader.ok());
  auto batch = (*loader)->Next();
  EXPECT_EQ(batch.status().code(), absl::StatusCode::kFailedPrecondition);
  LoaderOptions bad = Options();
  bad.batch_size = 0;
  EXPECT_FALSE(DataLoader::Start(listing->samples, bad).ok());
  EXPECT_FALSE(DataLoader::Start({}, Options()).ok());
  EXPECT_FALSE(DataPosition::Parse("next=3;pending=5").ok());
  EXPECT_FALSE(DataPosition::Parse("garbage").ok());
}

TEST(DataLoader, StopsCleanlyWhileWorkersWait) {
  auto listing = ListSamples(MakeDataset("loader4"));
  LoaderOptions o = Options();
  o.max_epochs = 0;  // forever
  auto loader = DataLoader::Start(listing->samples, o);
  ASSERT_TRUE(loader.ok());
  EXPECT_TRUE((*loader)->Next().ok());
  loader->reset();  // joins the workers blocked on the full queue
}

}  // namespace
}  // namespace dd::data
