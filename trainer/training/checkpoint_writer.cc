#include "trainer/training/checkpoint_writer.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/io/file_util.h"

namespace dd::training {

namespace fs = std::filesystem;

CheckpointWriter::CheckpointWriter(std::string output_dir, int keep)
    : output_dir_(std::move(output_dir)), keep_(std::max(1, keep)) {}

absl::StatusOr<std::string> CheckpointWriter::Write(
    int64_t step, const std::string& source_dir,
    const std::function<bool(const std::string& name)>& link,
    const std::function<absl::Status(const std::string& dir)>& write) {
  const fs::path final_dir = fs::path(output_dir_) / absl::StrCat("checkpoint-", step);
  const fs::path tmp = fs::path(final_dir.string() + ".tmp");
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", tmp.string()));
  absl::Status written = source_dir.empty() ? absl::OkStatus()
                                            : LinkOrCopyTree(source_dir, tmp.string(), link);
  if (written.ok()) written = write(tmp.string());
  if (!written.ok()) {
    fs::remove_all(tmp, ec);
    return written;
  }
  fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("renaming ", tmp.string(), ": ", ec.message()));
  const auto all = ListCheckpoints(output_dir_);
  for (size_t i = 0; i + keep_ < all.size(); ++i) fs::remove_all(all[i].second, ec);
  return final_dir.string();
}

std::vector<std::pair<int64_t, std::string>> ListCheckpoints(const std::string& output_dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  for (auto it = fs::directory_iterator(output_dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    int64_t step = 0;
    if (absl::StartsWith(name, "checkpoint-") && absl::SimpleAtoi(name.substr(11), &step) &&
        fs::exists(it->path() / kTrainingStateFile)) {
      out.push_back({step, it->path().string()});
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

absl::StatusOr<std::string> ResolveCheckpoint(const std::string& output_dir,
                                              const std::string& resume_from) {
  if (resume_from == "latest") {
    auto all = ListCheckpoints(output_dir);
    if (all.empty()) return absl::NotFoundError(absl::StrCat("no checkpoint-N in ", output_dir));
    return all.back().second;
  }
  if (!fs::exists(fs::path(resume_from) / kTrainingStateFile)) {
    return absl::NotFoundError(absl::StrCat(resume_from, " has no ", kTrainingStateFile));
  }
  return resume_from;
}

}  // namespace dd::training
