#include "common/tar/tar_format.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace dd::tar {
namespace {

std::string Tmp() { return std::getenv("TEST_TMPDIR"); }

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void Spit(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

std::string Archive(const std::vector<std::pair<std::string, std::string>>& members) {
  std::string out;
  for (const auto& [name, data] : members) {
    auto header = MakeFileHeader(name, data.size());
    EXPECT_TRUE(header.ok()) << header.status();
    out += *header + data + std::string(PaddingFor(data.size()), '\0');
  }
  return out + std::string(kTrailerSize, '\0');
}

TEST(TarFormat, SpanAndPadding) {
  EXPECT_EQ(PaddingFor(0), 0u);
  EXPECT_EQ(PaddingFor(1), 511u);
  EXPECT_EQ(PaddingFor(512), 0u);
  EXPECT_EQ(MemberSpan(513), 512u + 1024u);
}

TEST(TarFormat, GnuTarListsAndExtractsWhatWeWrite) {
  std::string jpg(1234, '\xff');
  std::string txt = "a red circle on a blue background";
  std::string bytes = Archive({{"000000001.jpg", jpg}, {"000000001.txt", txt}});
  EXPECT_EQ(bytes.size() % kBlockSize, 0u);
  std::string dir = Tmp() + "/gnu";
  ASSERT_EQ(std::system(("mkdir -p " + dir).c_str()), 0);
  Spit(dir + "/a.tar", bytes);
  ASSERT_EQ(std::system(("cd " + dir + " && tar tf a.tar > list && tar xf a.tar").c_str()), 0);
  EXPECT_EQ(Slurp(dir + "/list"), "000000001.jpg\n000000001.txt\n");
  EXPECT_EQ(Slurp(dir + "/000000001.jpg"), jpg);
  EXPECT_EQ(Slurp(dir + "/000000001.txt"), txt);
}

TEST(TarFormat, ListEntriesFindsOffsetsOfOurArchives) {
  std::string a(700, 'a'), b = "bb";
  std::string path = Tmp() + "/ours.tar";
  Spit(path, Archive({{"k.jpg", a}, {"k.txt", b}}));
  auto result = ListFileEntries(path);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->entries.size(), 2u);
  EXPECT_FALSE(result->used_extensions);
  EXPECT_EQ(result->entries[0].name, "k.jpg");
  EXPECT_EQ(result->entries[0].data_offset, 512u);
  EXPECT_EQ(result->entries[0].size, 700u);
  EXPECT_EQ(result->entries[1].name, "k.txt");
  EXPECT_EQ(result->entries[1].data_offset, 512u + 1024u + 512u);
}

TEST(TarFormat, ReadsGnuLongNamesAndPaxArchives) {
  std::string dir = Tmp() + "/ext";
  std::string long_dir = std::string(120, 'd');
  ASSERT_EQ(std::system(("mkdir -p " + dir + "/" + long_dir).c_str()), 0);
  Spit(dir + "/" + long_dir + "/x.txt", "hello");
  for (const char* format : {"gnu", "pax"}) {
    std::string tar = dir + "/" + format + ".tar";
    ASSERT_EQ(std::system(("cd " + dir + " && tar --format=" + format + " -cf " + tar +
                           " " + long_dir + "/x.txt").c_str()),
              0);
    auto result = ListFileEntries(tar);
    ASSERT_TRUE(result.ok()) << format << ": " << result.status();
    ASSERT_EQ(result->entries.size(), 1u) << format;
    EXPECT_EQ(result->entries[0].name, long_dir + "/x.txt") << format;
    EXPECT_EQ(result->entries[0].size, 5u);
    EXPECT_TRUE(result->used_extensions) << format;
  }
}

TEST(TarFormat, TruncatedOrCorruptArchivesAreDataLoss) {
  std::string bytes = Archive({{"k.jpg", std::string(2000, 'x')}, {"k.txt", "cap"}});
  std::string path = Tmp() + "/trunc.tar";
  Spit(path, bytes.substr(0, 1500));
  EXPECT_EQ(ListFileEntries(path).status().code(), absl::StatusCode::kDataLoss);
  Spit(path, bytes.substr(0, bytes.size() - kTrailerSize));
  EXPECT_EQ(ListFileEntries(path).status().code(), absl::StatusCode::kDataLoss);
  std::string corrupt = bytes;
  corrupt[10] ^= 1;  // inside the first header's name
  Spit(path, corrupt);
  EXPECT_EQ(ListFileEntries(path).status().code(), absl::StatusCode::kDataLoss);
  Spit(path, "");
  EXPECT_EQ(ListFileEntries(path).status().code(), absl::StatusCode::kDataLoss);
}

TEST(TarFormat, RefusesUnsafeNames) {
  EXPECT_FALSE(MakeFileHeader("", 1).ok());
  EXPECT_FALSE(MakeFileHeader("/etc/passwd", 1).ok());
  EXPECT_FALSE(MakeFileHeader("../x", 1).ok());
  EXPECT_FALSE(MakeFileHeader(std::string(101, 'a'), 1).ok());
}

TEST(TarFormat, HeadersAreDeterministic) {
  EXPECT_EQ(*MakeFileHeader("a.txt", 5), *MakeFileHeader("a.txt", 5));
  EXPECT_NE(*MakeFileHeader("a.txt", 5), *MakeFileHeader("a.txt", 6));
}

}  // namespace
}  // namespace dd::tar
