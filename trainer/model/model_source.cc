#include "trainer/model/model_source.h"

#include <filesystem>

#include <glog/logging.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/io/file_util.h"
#include "common/status/status_macros.h"
#include "trainer/model/hub_download.h"
#include "trainer/model/single_file.h"

namespace dd::model {
namespace {

namespace fs = std::filesystem;

std::string CacheRoot() { return UserCacheDir() + "/distributed-diffusion/single-file"; }

}  // namespace

absl::StatusOr<std::string> ResolveModel(const ModelSource& s) {
  std::error_code ec;
  if (!(absl::EndsWith(s.model, ".safetensors") && fs::is_regular_file(s.model, ec))) {
    return ResolveModelDir(s.model, s.hf_token_file, s.hf_variant);
  }
  if (s.config.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        s.model, " is a single-file checkpoint: --model_config must name a diffusers folder or Hub model "
                 "of its family (its configs, tokenizers and scheduler)"));
  }
  ASSIGN_OR_RETURN(std::string config_dir, ResolveModelDir(s.config, s.hf_token_file));
  // One import per version of the file: its name, size and modification time.
  const fs::path file(s.model);
  const auto mtime = fs::last_write_time(file, ec).time_since_epoch().count();
  const fs::path out = fs::path(CacheRoot()) / absl::StrCat(file.stem().string(), "-", fs::file_size(file, ec),
                                                            "-", mtime);
  if (fs::exists(out / "model_index.json", ec)) return out.string();
  fs::create_directories(out.parent_path(), ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", out.parent_path().string(), ": ", ec.message()));
  ASSIGN_OR_RETURN(ImportReport report, ImportSingleFile(s.model, config_dir, out.string()));
  LOG(INFO) << "imported " << s.model << " (" << FamilyName(report.family) << ") into " << out.string();
  return out.string();
}

}  // namespace dd::model
