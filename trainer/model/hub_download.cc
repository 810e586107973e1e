#include "trainer/model/hub_download.h"

#include <curl/curl.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include <glog/logging.h>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/crypto/sha256.h"
#include "common/io/file_util.h"
#include "common/progress/progress_line.h"
#include "common/status/status_macros.h"

namespace dd::model {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// One HTTP exchange's result.
struct Reply {
  long status = 0;  // NOLINT(runtime/int): curl's type
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  CURLcode code = CURLE_OK;
  std::string error;
};

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* reply = static_cast<Reply*>(user);
  absl::string_view line(data, size * n);
  if (absl::StartsWith(line, "HTTP/")) reply->headers.clear();  // a redirect's next response
  const size_t colon = line.find(':');
  if (colon != absl::string_view::npos) {
    reply->headers[absl::AsciiStrToLower(line.substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  }
  return size * n;
}

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  static_cast<Reply*>(user)->body.append(data, size * n);
  return size * n;
}

// Where a download's bytes go, hashed and counted as they arrive.
struct Sink {
  std::FILE* file = nullptr;
  uint64_t written = 0;
  ProgressLine* progress = nullptr;
  uint64_t* total_done = nullptr;
};

size_t OnFileBody(char* data, size_t size, size_t n, void* user) {
  auto* sink = static_cast<Sink*>(user);
  const size_t bytes = size * n;
  if (std::fwrite(data, 1, bytes, sink->file) != bytes) return 0;  // aborts the transfer
  sink->written += bytes;
  *sink->total_done += bytes;
  if (sink->progress != nullptr) sink->progress->Update(*sink->total_done, *sink->total_done);
  return bytes;
}

class Http {
 public:
  explicit Http(const HubOptions& o) : o_(o) { GlobalInit(); }

  // GET or HEAD of `url`; redirects followed when `follow`. `sink` (GET
  // only) receives the body instead of Reply::body, from `offset`.
  Reply Fetch(const std::string& url, bool head, bool follow, Sink* sink = nullptr,
              uint64_t offset = 0, bool with_token = true) const {
    Reply reply;
    CURL* curl = curl_easy_init();
    if (curl == nullptr) {
      reply.code = CURLE_FAILED_INIT;
      return reply;
    }
    char error[CURL_ERROR_SIZE] = {0};
    curl_slist* headers = nullptr;
    if (with_token && !o_.token.empty()) {
      headers = curl_slist_append(headers, ("Authorization: Bearer " + o_.token).c_str());
    }
    headers = curl_slist_append(headers, "User-Agent: distributed-diffusion/0.1; hf_hub-compatible");
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_NOBODY, head ? 1L : 0L);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, follow ? 1L : 0L);
    curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(absl::ToInt64Milliseconds(o_.timeout)));
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &reply);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    if (sink != nullptr) {
      curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnFileBody);
      curl_easy_setopt(curl, CURLOPT_WRITEDATA, sink);
      if (offset > 0) curl_easy_setopt(curl, CURLOPT_RANGE, absl::StrCat(offset, "-").c_str());
    } else {
      curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnBody);
      curl_easy_setopt(curl, CURLOPT_WRITEDATA, &reply);
    }
    reply.code = curl_easy_perform(curl);
    reply.error = error[0] != 0 ? error : curl_easy_strerror(reply.code);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply.status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return reply;
  }

 private:
  const HubOptions& o_;
};

// The Hub's answer as a status: its error codes (X-Error-Code) mapped to
// what a user must do.
absl::Status HubError(const Reply& r, const std::string& what) {
  if (r.code != CURLE_OK) {
    return absl::UnavailableError(absl::StrCat(what, ": ", r.error));
  }
  if (r.status >= 200 && r.status < 400) return absl::OkStatus();
  const std::string code = r.headers.count("x-error-code") ? r.headers.at("x-error-code") : "";
  const std::string message = r.headers.count("x-error-message") ? r.headers.at("x-error-message") : "";
  const std::string detail = absl::StrCat(what, ": HTTP ", r.status, code.empty() ? "" : " ", code,
                                          message.empty() ? "" : ": ", message);
  if (code == "GatedRepo") {
    return absl::PermissionDeniedError(absl::StrCat(
        detail, " (a gated repository: accept its conditions on the Hub with the token's account)"));
  }
  if (r.status == 401) {
    return absl::UnauthenticatedError(absl::StrCat(
        detail, " (a private or gated repository needs a valid token: --hf_token_file, HF_TOKEN or "
                "`huggingface-cli login`)"));
  }
  if (r.status == 403) return absl::PermissionDeniedError(detail);
  if (r.status == 404) return absl::NotFoundError(detail);
  if (r.status == 429 || r.status >= 500) return absl::UnavailableError(detail);
  return absl::InternalError(detail);
}

std::string Unquote(std::string etag) {
  if (absl::StartsWith(etag, "W/")) etag = etag.substr(2);
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') etag = etag.substr(1, etag.size() - 2);
  return etag;
}

bool SafeRelativePath(const std::string& path) {
  if (path.empty() || path[0] == '/' || absl::StrContains(path, "\\")) return false;
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  return true;
}

// The files a diffusers pipeline needs among the repository's.
absl::StatusOr<std::vector<std::string>> PipelineFiles(const std::string& model_index,
                                                       const std::set<std::string>& files,
                                                       const std::string& variant) {
  json index = json::parse(model_index, nullptr, false);
  if (!index.is_object()) return absl::InvalidArgumentError("model_index.json is not a JSON object");
  std::vector<std::string> out = {"model_index.json"};
  for (const auto& [part, value] : index.items()) {
    if (part.empty() || part[0] == '_' || !value.is_array() || value.size() != 2 || value[0].is_null()) continue;
    bool safetensors = false, has_variant = false;
    for (const std::string& f : files) {
      safetensors |= absl::StartsWith(f, part + "/") && absl::EndsWith(f, ".safetensors");
      has_variant |= !variant.empty() && absl::StartsWith(f, part + "/") &&
                     absl::EndsWith(f, "." + variant + ".safetensors");
    }
    for (const std::string& f : files) {
      if (!absl::StartsWith(f, part + "/") || f.find('/', part.size() + 1) != std::string::npos) continue;
      const std::string name = f.substr(part.size() + 1);
      // Variants (name.fp16.safetensors) only on request, and then instead
      // of the plain weights of a part that has them.
      const bool is_weights = absl::EndsWith(name, ".safetensors") || absl::EndsWith(name, ".bin");
      const bool is_variant = is_weights && std::count(name.begin(), name.end(), '.') > 1;
      const bool wanted_variant = has_variant && absl::EndsWith(name, "." + variant + ".safetensors");
      const auto dots = std::count(name.begin(), name.end(), '.');
      const bool shard_index = absl::EndsWith(name, ".safetensors.index.json") &&
                               (has_variant ? absl::EndsWith(name, "." + variant + ".safetensors.index.json")
                                            : dots == 3);
      const bool config = (absl::EndsWith(name, ".json") && dots == 1) || shard_index;
      const bool text = absl::EndsWith(name, ".txt");
      // Shards of an index are weights too ("name-00001-of-00002.safetensors").
      const bool weights = has_variant ? wanted_variant
                                       : !is_variant && (absl::EndsWith(name, ".safetensors") ||
                                                         (!safetensors && absl::EndsWith(name, ".bin")));
      if (config || text || weights) out.push_back(f);
    }
  }
  return out;
}

struct RemoteFile {
  std::string path;
  uint64_t size = 0;
  std::string sha256;  // LFS files only
};

// Links snapshots/<commit>/<path> to ../../blobs/<etag> (relative, as
// huggingface_hub makes them).
absl::Status LinkSnapshot(const fs::path& repo_dir, const std::string& commit, const std::string& path,
                          const std::string& etag) {
  const fs::path link = repo_dir / "snapshots" / commit / path;
  std::error_code ec;
  fs::create_directories(link.parent_path(), ec);
  std::string target = "../../blobs/" + etag;
  for (size_t depth = std::count(path.begin(), path.end(), '/'); depth > 0; --depth) target = "../" + target;
  fs::remove(link, ec);
  fs::create_symlink(target, link, ec);
  if (ec) return absl::InternalError(absl::StrCat("linking ", link.string(), ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<HubOptions> HubOptionsFromEnvironment(const std::string& token_file) {
  HubOptions o;
  if (!Env("HF_ENDPOINT").empty()) o.endpoint = std::string(absl::StripSuffix(Env("HF_ENDPOINT"), "/"));
  const std::string home = !Env("HF_HOME").empty() ? Env("HF_HOME") : UserCacheDir() + "/huggingface";
  o.cache_dir = !Env("HF_HUB_CACHE").empty() ? Env("HF_HUB_CACHE") : home + "/hub";
  const std::string offline = absl::AsciiStrToLower(Env("HF_HUB_OFFLINE"));
  o.offline = offline == "1" || offline == "true" || offline == "yes";
  if (!token_file.empty()) {
    ASSIGN_OR_RETURN(std::string t, ReadFileToString(token_file, 4096));
    o.token = std::string(absl::StripAsciiWhitespace(t));
  } else if (!Env("HF_TOKEN").empty()) {
    o.token = Env("HF_TOKEN");
  } else if (auto t = ReadFileToString(home + "/token", 4096); t.ok()) {
    o.token = std::string(absl::StripAsciiWhitespace(*t));
  }
  return o;
}

std::optional<ModelRef> ParseModelRef(const std::string& text) {
  std::error_code ec;
  if (text.empty() || text[0] == '/' || text[0] == '.' || text[0] == '~' || fs::exists(text, ec)) {
    return std::nullopt;
  }
  ModelRef ref;
  std::string repo = text;
  if (const size_t at = text.find('@'); at != std::string::npos) {
    repo = text.substr(0, at);
    ref.revision = text.substr(at + 1);
    if (ref.revision.empty() || !SafeRelativePath(ref.revision)) return std::nullopt;
  }
  std::vector<std::string> parts = absl::StrSplit(repo, '/');
  if (parts.size() != 2) return std::nullopt;
  for (const std::string& p : parts) {
    if (p.empty() || p.size() > 96 || p[0] == '.' || p[0] == '-') return std::nullopt;
    for (char c : p) {
      if (!absl::ascii_isalnum(c) && c != '-' && c != '_' && c != '.') return std::nullopt;
    }
  }
  ref.repo = repo;
  return ref;
}

absl::StatusOr<std::string> DownloadPipeline(const ModelRef& ref, const HubOptions& o) {
  const fs::path repo_dir = fs::path(o.cache_dir) / ("models--" + absl::StrReplaceAll(ref.repo, {{"/", "--"}}));
  std::error_code ec;
  auto cached_commit = [&]() -> std::optional<std::string> {
    if (ref.revision.size() == 40 && fs::is_directory(repo_dir / "snapshots" / ref.revision, ec)) {
      return ref.revision;
    }
    auto c = ReadFileToString((repo_dir / "refs" / ref.revision).string(), 256);
    if (!c.ok()) return std::nullopt;
    return std::string(absl::StripAsciiWhitespace(*c));
  };
  if (o.offline) {
    auto commit = cached_commit();
    const fs::path snapshot = repo_dir / "snapshots" / commit.value_or("-");
    if (!commit || !fs::exists(snapshot / "model_index.json", ec)) {
      return absl::NotFoundError(absl::StrCat(ref.repo, "@", ref.revision, " is not in the cache ", o.cache_dir,
                                              " (HF_HUB_OFFLINE is set)"));
    }
    return snapshot.string();
  }
  Http http(o);
  const std::string repo_url = absl::StrCat(o.endpoint, "/api/models/", ref.repo, "/revision/", ref.revision, "?blobs=true");
  Reply info = http.Fetch(repo_url, /*head=*/false, /*follow=*/true);
  RETURN_IF_ERROR(HubError(info, absl::StrCat(ref.repo, "@", ref.revision)));
  json doc = json::parse(info.body, nullptr, false);
  if (!doc.is_object() || !doc.contains("sha") || !doc["sha"].is_string() || !doc.contains("siblings") ||
      !doc["siblings"].is_array()) {
    return absl::InternalError(absl::StrCat(ref.repo, ": the Hub's answer lacks sha or siblings"));
  }
  const std::string commit = doc["sha"].get<std::string>();
  if (!SafeRelativePath(commit)) return absl::InternalError("the Hub named an odd commit");
  std::map<std::string, RemoteFile> remote;
  std::set<std::string> names;
  for (const auto& s : doc["siblings"]) {
    if (!s.is_object() || !s.contains("rfilename") || !s["rfilename"].is_string()) continue;
    RemoteFile f;
    f.path = s["rfilename"].get<std::string>();
    if (!SafeRelativePath(f.path)) continue;
    if (s.contains("size") && s["size"].is_number_unsigned()) f.size = s["size"].get<uint64_t>();
    if (s.contains("lfs") && s["lfs"].is_object() && s["lfs"].contains("sha256") && s["lfs"]["sha256"].is_string()) {
      f.sha256 = s["lfs"]["sha256"].get<std::string>();
      if (s["lfs"].contains("size") && s["lfs"]["size"].is_number_unsigned()) f.size = s["lfs"]["size"].get<uint64_t>();
    }
    names.insert(f.path);
    remote[f.path] = f;
  }
  if (!names.count("model_index.json")) {
    return absl::FailedPreconditionError(absl::StrCat(ref.repo, " has no model_index.json: not a diffusers pipeline"));
  }
  fs::create_directories(repo_dir / "blobs", ec);
  fs::create_directories(repo_dir / "refs", ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", repo_dir.string(), ": ", ec.message()));
  if (ref.revision != commit) {
    RETURN_IF_ERROR(WriteFileAtomically((repo_dir / "refs" / ref.revision).string(), commit));
  }
  uint64_t done = 0;
  // Fetches one file into the cache (nothing when its blob is there).
  auto fetch = [&](const RemoteFile& f, ProgressLine* progress) -> absl::Status {
    const std::string url = absl::StrCat(o.endpoint, "/", ref.repo, "/resolve/", commit, "/", f.path);
    Reply head = http.Fetch(url, /*head=*/true, /*follow=*/false);
    RETURN_IF_ERROR(HubError(head, f.path));
    std::string etag = head.headers.count("x-linked-etag") ? head.headers["x-linked-etag"] : head.headers["etag"];
    etag = Unquote(etag);
    if (etag.empty() || !SafeRelativePath(etag) || absl::StrContains(etag, "/")) {
      return absl::InternalError(absl::StrCat(f.path, ": the Hub sent no usable ETag"));
    }
    uint64_t size = f.size;
    if (head.headers.count("x-linked-size")) absl::SimpleAtoi(head.headers["x-linked-size"], &size);
    const fs::path blob = repo_dir / "blobs" / etag;
    if (fs::exists(blob, ec) && (size == 0 || fs::file_size(blob, ec) == size)) {
      done += size;
      return LinkSnapshot(repo_dir, commit, f.path, etag);
    }
    // Large files live on the Hub's storage: fetched from where the Hub
    // redirects, without the token (as huggingface_hub does).
    std::string source = url;
    bool with_token = true;
    if (head.status >= 300 && head.status < 400 && head.headers.count("location")) {
      source = head.headers["location"];
      if (absl::StartsWith(source, "/")) source = o.endpoint + source;
      with_token = false;
    }
    const fs::path partial = blob.string() + ".incomplete";
    absl::Status last;
    for (int attempt = 0; attempt < o.attempts; ++attempt) {
      const uint64_t have = fs::exists(partial, ec) ? fs::file_size(partial, ec) : 0;
      if (size > 0 && have > size) fs::remove(partial, ec);
      const uint64_t offset = size > 0 && have > size ? 0 : have;
      Sink sink;
      sink.file = std::fopen(partial.c_str(), offset > 0 ? "ab" : "wb");
      if (sink.file == nullptr) return absl::InternalError(absl::StrCat("cannot write ", partial.string()));
      sink.progress = progress;
      sink.total_done = &done;
      done += offset;
      Reply r = http.Fetch(source, /*head=*/false, /*follow=*/true, &sink, offset, with_token);
      std::fclose(sink.file);
      if (r.code == CURLE_OK && offset > 0 && r.status == 200) {
        // The server ignored the range: what arrived is the whole file.
        last = absl::UnavailableError(absl::StrCat(f.path, ": the server ignored the resume range"));
        fs::remove(partial, ec);
        continue;
      }
      last = HubError(r, f.path);
      if (last.ok()) break;
      LOG(WARNING) << "downloading " << f.path << " (attempt " << attempt + 1 << " of " << o.attempts
                   << "): " << last;
      if (!absl::IsUnavailable(last)) break;  // auth and missing files do not heal
    }
    RETURN_IF_ERROR(last);
    const uint64_t got = fs::file_size(partial, ec);
    auto fail = [&](std::string why) {
      fs::remove(partial, ec);
      return absl::DataLossError(absl::StrCat(f.path, ": ", why, "; the download was discarded"));
    };
    if (size > 0 && got != size) return fail(absl::StrCat(got, " bytes arrived, the Hub states ", size));
    if (!f.sha256.empty()) {
      ASSIGN_OR_RETURN(Sha256Digest digest, Sha256OfFile(partial.string()));
      if (DigestToHex(digest) != absl::AsciiStrToLower(f.sha256)) {
        return fail(absl::StrCat("SHA-256 ", DigestToHex(digest), " differs from the Hub's ", f.sha256));
      }
    }
    fs::rename(partial, blob, ec);
    if (ec) return absl::InternalError(absl::StrCat("renaming ", partial.string(), ": ", ec.message()));
    return LinkSnapshot(repo_dir, commit, f.path, etag);
  };
  // model_index.json decides what else is needed.
  RETURN_IF_ERROR(fetch(remote["model_index.json"], nullptr));
  const fs::path snapshot = repo_dir / "snapshots" / commit;
  ASSIGN_OR_RETURN(std::string index, ReadFileToString((snapshot / "model_index.json").string(), 1 << 20));
  ASSIGN_OR_RETURN(std::vector<std::string> wanted, PipelineFiles(index, names, o.variant));
  uint64_t total = 0;
  for (const std::string& p : wanted) total += remote[p].size;
  ProgressLine progress(absl::StrCat("downloading ", ref.repo), total, "bytes");
  done = 0;
  for (const std::string& p : wanted) RETURN_IF_ERROR(fetch(remote[p], &progress));
  progress.Finish(absl::StrCat(wanted.size(), " files in ", snapshot.string()));
  return snapshot.string();
}

absl::StatusOr<std::string> ResolveModelDir(const std::string& model, const std::string& token_file,
                                            const std::string& variant) {
  std::optional<ModelRef> ref = ParseModelRef(model);
  if (!ref) return model;
  ASSIGN_OR_RETURN(HubOptions o, HubOptionsFromEnvironment(token_file));
  o.variant = variant;
  return DownloadPipeline(*ref, o);
}

}  // namespace dd::model
