#include "services/coordinator/run_config.h"

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/io/file_util.h"

namespace dd::coordinator {

absl::StatusOr<RunConfig> ParseRunConfig(const std::string& text, const std::string& source) {
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    // Parse again for the position (the non-throwing form does not report it).
    try {
      (void)nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON: ", e.what()));
    }
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  }
  if (!doc.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": must be a JSON object"));
  }
  auto it = doc.find("run_id");
  if (it == doc.end() || !it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": needs a string \"run_id\""));
  }
  std::string run_id = it->get<std::string>();
  bool valid = !run_id.empty() && run_id.size() <= 64;
  for (char c : run_id) {
    valid &= absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  }
  if (!valid) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": run_id \"", run_id, "\" must be 1-64 letters, digits, '.', '_' or '-'"));
  }
  auto tbs = doc.find("target_batch_size");
  if (tbs != doc.end() && !(tbs->is_number_unsigned() && tbs->get<uint64_t>() > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": target_batch_size must be a positive integer"));
  }
  RunConfig config{run_id, doc.dump()};
  if (tbs != doc.end()) config.target_batch_size = tbs->get<uint64_t>();
  auto open = doc.find("open_run");
  if (open != doc.end() && !open->is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": open_run must be true or false"));
  }
  const bool open_run = open != doc.end() && open->get<bool>();
  config.reducer_audits = open_run ? 1 : 0;
  auto audits = doc.find("reducer_audits");
  if (audits != doc.end()) {
    if (!audits->is_number_unsigned() || audits->get<uint64_t>() > 8) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": reducer_audits must be an integer from 0 to 8"));
    }
    config.reducer_audits = audits->get<uint32_t>();
  }
  return config;
}

absl::StatusOr<RunConfig> LoadRunConfig(const std::string& path) {
  auto text = ReadFileToString(path, 1 << 20);
  if (!text.ok()) return text.status();
  return ParseRunConfig(*text, path);
}

}  // namespace dd::coordinator
