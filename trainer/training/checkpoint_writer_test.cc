// CheckpointWriter on real folders: linked frozen parts, the caller's
// files, pruning to `keep`, a failed write that leaves nothing behind, and
// which folders count when resuming.
#include "trainer/training/checkpoint_writer.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/io/file_util.h"
#include "gtest/gtest.h"

namespace dd::training {
namespace {

namespace fs = std::filesystem;

std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  fs::path dir = fs::path(base != nullptr ? base : "/tmp") / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

absl::Status WriteState(const std::string& dir) {
  return WriteFileAtomically(dir + "/" + kTrainingStateFile, "state");
}

TEST(CheckpointWriter, LinksFrozenPartsAddsTheRestAndKeepsTheNewest) {
  const std::string source = TempDir("ckpt-source");
  fs::create_directories(source + "/vae");
  ASSERT_TRUE(WriteFileAtomically(source + "/vae/weights", "frozen").ok());
  ASSERT_TRUE(WriteFileAtomically(source + "/model_index.json", "{}").ok());
  fs::create_directories(source + "/unet");
  const std::string out = TempDir("ckpt-out");
  CheckpointWriter writer(out, 2);
  for (int64_t step : {10, 20, 30}) {
    auto dir = writer.Write(
        step, source, [](const std::string& name) { return name != "unet"; },
        [&](const std::string& tmp) {
          fs::create_directories(tmp + "/unet");
          auto s = WriteFileAtomically(tmp + "/unet/weights", absl::StrCat("trained ", step));
          if (!s.ok()) return s;
          return WriteState(tmp);
        });
    ASSERT_TRUE(dir.ok()) << dir.status();
    EXPECT_EQ(*dir, out + "/checkpoint-" + std::to_string(step));
  }
  auto all = ListCheckpoints(out);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].first, 20);
  EXPECT_EQ(all[1].first, 30);
  EXPECT_FALSE(fs::exists(out + "/checkpoint-10"));
  // The frozen file is the source's own inode, the trained one is new.
  struct stat a, b;
  ASSERT_EQ(stat((source + "/vae/weights").c_str(), &a), 0);
  ASSERT_EQ(stat((out + "/checkpoint-30/vae/weights").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_FALSE(fs::exists(out + "/checkpoint-30/unet/config.json"));
  std::ifstream trained(out + "/checkpoint-30/unet/weights");
  std::string text((std::istreambuf_iterator<char>(trained)), {});
  EXPECT_EQ(text, "trained 30");
  auto latest = ResolveCheckpoint(out, "latest");
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(*latest, out + "/checkpoint-30");
}

TEST(CheckpointWriter, AFailedWriteLeavesNeitherTheFolderNorItsTemporary) {
  const std::string out = TempDir("ckpt-fail");
  CheckpointWriter writer(out, 3);
  ASSERT_TRUE(writer.Write(1, "", nullptr, WriteState).ok());
  auto failed = writer.Write(2, "", nullptr, [](const std::string& tmp) {
    (void)WriteState(tmp);
    return absl::DataLossError("disk full");
  });
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(fs::exists(out + "/checkpoint-2"));
  EXPECT_FALSE(fs::exists(out + "/checkpoint-2.tmp"));
  EXPECT_EQ(ListCheckpoints(out).size(), 1u);
}

TEST(CheckpointWriter, OnlyFoldersWithATrainingStateAreResumedFrom) {
  const std::string out = TempDir("ckpt-resume");
  EXPECT_EQ(ResolveCheckpoint(out, "latest").status().code(), absl::StatusCode::kNotFound);
  fs::create_directories(out + "/checkpoint-99");  // a crash mid-write, by an older version
  CheckpointWriter writer(out, 3);
  ASSERT_TRUE(writer.Write(5, "", nullptr, WriteState).ok());
  EXPECT_EQ(*ResolveCheckpoint(out, "latest"), out + "/checkpoint-5");
  EXPECT_EQ(*ResolveCheckpoint(out, out + "/checkpoint-5"), out + "/checkpoint-5");
  EXPECT_EQ(ResolveCheckpoint(out, out + "/checkpoint-99").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace dd::training
