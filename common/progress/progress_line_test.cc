#include "common/progress/progress_line.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace dd {
namespace {

TEST(ProgressLine, FormatsCountsPercentRateAndEta) {
  ProgressLine line("indexing", 200, "files");
  absl::SleepFor(absl::Milliseconds(20));
  std::string s = line.Format(50, 5000000, "(3 skipped)");
  EXPECT_TRUE(absl::StartsWith(s, "indexing: 50/200 files (25.0%) ")) << s;
  EXPECT_TRUE(absl::StrContains(s, "files/s")) << s;
  EXPECT_TRUE(absl::StrContains(s, "MB/s")) << s;
  EXPECT_TRUE(absl::StrContains(s, "ETA ")) << s;
  EXPECT_TRUE(absl::EndsWith(s, "(3 skipped)")) << s;
}

TEST(ProgressLine, UnknownTotalHasNoEta) {
  ProgressLine line("download", 0, "chunks");
  std::string s = line.Format(3, 0, "");
  EXPECT_FALSE(absl::StrContains(s, "ETA")) << s;
}

TEST(FormatEta, Units) {
  EXPECT_EQ(FormatEta(absl::Seconds(12)), "12s");
  EXPECT_EQ(FormatEta(absl::Seconds(185)), "3m05s");
  EXPECT_EQ(FormatEta(absl::Seconds(3720)), "1h02m");
}

}  // namespace
}  // namespace dd
