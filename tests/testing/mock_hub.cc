#include "tests/testing/mock_hub.h"

#include <httplib.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/crypto/sha256.h"

namespace dd::testing {
namespace {

namespace fs = std::filesystem;

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<MockHub>> MockHub::Start(MockHubRepo repo) {
  std::unique_ptr<MockHub> hub(new MockHub());
  hub->repo_ = std::move(repo);
  for (const auto& e : fs::recursive_directory_iterator(hub->repo_.folder)) {
    if (!e.is_regular_file()) continue;
    File f;
    f.bytes = ReadAll(e.path());
    f.sha256 = DigestToHex(Sha256Of(f.bytes));
    f.lfs = absl::EndsWith(e.path().string(), ".safetensors");
    hub->files_[fs::relative(e.path(), hub->repo_.folder).string()] = std::move(f);
  }
  hub->server_ = std::make_unique<httplib::Server>();
  hub->Routes();
  const int port = hub->server_->bind_to_any_port("127.0.0.1");
  if (port <= 0) return absl::InternalError("mock hub: cannot bind");
  hub->endpoint_ = absl::StrCat("http://127.0.0.1:", port);
  hub->thread_ = std::thread([h = hub.get()] { h->server_->listen_after_bind(); });
  return hub;
}

MockHub::~MockHub() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

void MockHub::CutNextDownload(const std::string& path, size_t bytes) {
  absl::MutexLock lock(&mu_);
  cut_[path] = bytes;
}

void MockHub::Corrupt(const std::string& path) {
  absl::MutexLock lock(&mu_);
  corrupt_[path] = true;
}

int MockHub::ranged_requests() const {
  absl::MutexLock lock(&mu_);
  return ranged_;
}

int MockHub::downloads() const {
  absl::MutexLock lock(&mu_);
  return downloads_;
}

void MockHub::Routes() {
  // Access as the Hub decides it; false after setting the error response.
  auto allowed = [this](const httplib::Request& req, httplib::Response& res, const std::string& repo) {
    if (repo != repo_.name) {
      res.status = 404;
      res.set_header("X-Error-Code", "RepoNotFound");
      res.set_header("X-Error-Message", "Repository not found");
      return false;
    }
    const std::string auth = req.get_header_value("Authorization");
    const std::string token = absl::StartsWith(auth, "Bearer ") ? auth.substr(7) : "";
    if (!repo_.gated_token.empty() && token == repo_.gated_token) {
      res.status = 403;
      res.set_header("X-Error-Code", "GatedRepo");
      res.set_header("X-Error-Message", "Access to this model is restricted");
      return false;
    }
    if (!repo_.token.empty() && token != repo_.token) {
      res.status = 401;
      res.set_header("X-Error-Message", "Invalid credentials in Authorization header");
      return false;
    }
    return true;
  };
  auto commit_of = [this](const std::string& revision, httplib::Response& res) -> std::string {
    for (const auto& [name, commit] : repo_.revisions) {
      if (revision == name || revision == commit) return commit;
    }
    res.status = 404;
    res.set_header("X-Error-Code", "RevisionNotFound");
    return "";
  };
  server_->Get(R"(/api/models/([^/]+/[^/]+)/revision/([^/]+))",
               [=](const httplib::Request& req, httplib::Response& res) {
                 if (!allowed(req, res, req.matches[1])) return;
                 const std::string commit = commit_of(req.matches[2], res);
                 if (commit.empty()) return;
                 nlohmann::json siblings = nlohmann::json::array();
                 for (const auto& [path, f] : files_) {
                   nlohmann::json s = {{"rfilename", path}, {"size", f.bytes.size()}};
                   if (f.lfs) s["lfs"] = {{"sha256", f.sha256}, {"size", f.bytes.size()}};
                   siblings.push_back(s);
                 }
                 nlohmann::json doc = {{"id", repo_.name}, {"sha", commit}, {"siblings", siblings}};
                 res.set_content(doc.dump(), "application/json");
               });
  // The bytes of a file, honouring ranges, cut or corrupted as asked.
  auto serve = [this](const httplib::Request& req, httplib::Response& res, const std::string& path) {
    const File& f = files_.at(path);
    std::string bytes = f.bytes;
    size_t cut = 0;
    {
      absl::MutexLock lock(&mu_);
      if (req.method == "GET") ++downloads_;
      if (req.has_header("Range")) ++ranged_;
      if (corrupt_.count(path)) bytes[bytes.size() / 2] ^= 0x5a;
      if (auto it = cut_.find(path); it != cut_.end() && req.method == "GET") {
        cut = it->second;
        cut_.erase(it);
      }
    }
    if (cut == 0) {
      res.set_content(bytes, "application/octet-stream");
      return;
    }
    // Writes the first `cut` bytes, then drops the connection.
    res.set_content_provider(bytes.size(), "application/octet-stream",
                             [bytes, cut](size_t offset, size_t length, httplib::DataSink& sink) {
                               if (offset >= cut) return false;
                               const size_t n = std::min(length, cut - offset);
                               sink.write(bytes.data() + offset, n);
                               return offset + n < cut;
                             });
  };
  server_->Get(R"(/([^/]+/[^/]+)/resolve/([^/]+)/(.+))", [=](const httplib::Request& req, httplib::Response& res) {
    if (!allowed(req, res, req.matches[1])) return;
    const std::string commit = commit_of(req.matches[2], res);
    if (commit.empty()) return;
    const std::string path = req.matches[3];
    auto it = files_.find(path);
    if (it == files_.end()) {
      res.status = 404;
      res.set_header("X-Error-Code", "EntryNotFound");
      return;
    }
    res.set_header("X-Repo-Commit", commit);
    if (it->second.lfs) {
      res.set_header("X-Linked-Etag", "\"" + it->second.sha256 + "\"");
      res.set_header("X-Linked-Size", std::to_string(it->second.bytes.size()));
      res.set_header("ETag", "\"" + it->second.sha256.substr(0, 40) + "-lfs\"");
      res.set_redirect("/cdn/" + it->second.sha256 + "?path=" + path, 302);
      return;
    }
    res.set_header("ETag", "\"" + it->second.sha256.substr(0, 40) + "\"");
    serve(req, res, path);
  });
  server_->Get(R"(/cdn/([0-9a-f]{64}))", [=](const httplib::Request& req, httplib::Response& res) {
    // The storage a redirect names never sees the Hub token.
    if (req.has_header("Authorization")) {
      res.status = 400;
      return;
    }
    const std::string path = req.get_param_value("path");
    auto it = files_.find(path);
    if (it == files_.end() || it->second.sha256 != std::string(req.matches[1])) {
      res.status = 404;
      return;
    }
    serve(req, res, path);
  });
}

}  // namespace dd::testing
