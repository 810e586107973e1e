#include "common/metrics/event_writer.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/metrics/tensorboard_event.pb.h"
#include "gtest/gtest.h"

namespace dd::metrics {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

uint64_t Le(const std::string& s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}

TEST(Crc32c, KnownVectors) {
  // RFC 3720 B.4 test vectors.
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\xFF')), 0x62A8AB43u);
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
}

TEST(EventWriter, RecordsParseBackWithValidChecksums) {
  std::string dir = std::string(getenv("TEST_TMPDIR")) + "/tb";
  auto w = EventWriter::Create(dir);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE((*w)->AddScalar("train/loss", 7, 0.25).ok());
  RgbImage img{2, 1, {255, 0, 0, 0, 0, 255}};
  ASSERT_TRUE((*w)->AddImage("samples", 7, img).ok());
  ASSERT_TRUE((*w)->Flush().ok());
  std::string bytes = Slurp((*w)->path());
  std::vector<tensorboard::Event> events;
  size_t at = 0;
  while (at < bytes.size()) {
    ASSERT_LE(at + 12, bytes.size());
    uint64_t len = Le(bytes, at, 8);
    EXPECT_EQ(Le(bytes, at + 8, 4), MaskedCrc32c(bytes.substr(at, 8)));
    ASSERT_LE(at + 16 + len, bytes.size());
    std::string payload = bytes.substr(at + 12, len);
    EXPECT_EQ(Le(bytes, at + 12 + len, 4), MaskedCrc32c(payload));
    tensorboard::Event e;
    ASSERT_TRUE(e.ParseFromString(payload));
    events.push_back(e);
    at += 16 + len;
  }
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].file_version(), "brain.Event:2");
  EXPECT_EQ(events[1].step(), 7);
  EXPECT_EQ(events[1].summary().value(0).tag(), "train/loss");
  EXPECT_FLOAT_EQ(events[1].summary().value(0).simple_value(), 0.25f);
  EXPECT_EQ(events[2].summary().value(0).image().width(), 2);
  EXPECT_EQ(events[2].summary().value(0).image().encoded_image_string().substr(1, 3), "PNG");
}

TEST(JsonlWriter, OneObjectPerLine) {
  std::string path = std::string(getenv("TEST_TMPDIR")) + "/m/log.jsonl";
  {
    auto w = JsonlWriter::Open(path);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Write({{"step", 1}, {"loss", 0.5}}).ok());
    ASSERT_TRUE((*w)->Write({{"step", 2}, {"loss", NAN}}, {{"note", "a \"quoted\" word"}}).ok());
  }
  EXPECT_EQ(Slurp(path),
            "{\"loss\":0.5,\"step\":1}\n{\"loss\":null,\"note\":\"a \\\"quoted\\\" word\",\"step\":2}\n");
  EXPECT_FALSE(JsonlWriter::Open("/proc/no/such/dir/log.jsonl").ok());
}

}  // namespace
}  // namespace dd::metrics
