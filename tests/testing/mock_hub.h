// A stand-in for the Hugging Face Hub over real HTTP (cpp-httplib on
// 127.0.0.1, any free port), serving one local folder as a model
// repository with the routes and headers huggingface_hub's clients use:
//   GET  /api/models/{repo}/revision/{revision}   {"sha", "siblings": [{rfilename,
//        size, lfs: {sha256, size}}]}   (?blobs=true)
//   HEAD/GET /{repo}/resolve/{revision}/{path}    X-Repo-Commit, ETag; LFS files
//        (*.safetensors): 302 to /cdn/{sha256} with X-Linked-Etag, X-Linked-Size
//   GET  /cdn/{sha256}                            the bytes, with Range support
// Errors as the Hub answers them: 401 without a valid token for a private
// repository, 403 with X-Error-Code GatedRepo for a token that has not
// accepted a gated one's conditions, 404 with X-Error-Code RepoNotFound or
// RevisionNotFound. Tests can cut one transfer short and corrupt a blob.
#ifndef TESTS_TESTING_MOCK_HUB_H_
#define TESTS_TESTING_MOCK_HUB_H_

#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace httplib {
class Server;
}

namespace dd::testing {

struct MockHubRepo {
  std::string name = "org/tiny-sd";  // org/name
  std::string folder;                // what it holds
  // Branches and tags by name; each names a commit (40 hex characters).
  std::map<std::string, std::string> revisions = {
      {"main", "0123456789abcdef0123456789abcdef01234567"},
      {"v1", "89abcdef0123456789abcdef0123456789abcdef"}};
  std::string token;        // non-empty: private, this token reads it
  std::string gated_token;  // a valid token whose user has not accepted the conditions
};

class MockHub {
 public:
  static absl::StatusOr<std::unique_ptr<MockHub>> Start(MockHubRepo repo);
  ~MockHub();

  // http://127.0.0.1:PORT
  std::string endpoint() const { return endpoint_; }

  // The next download of `path` stops after `bytes` bytes (the connection
  // closes mid-body).
  void CutNextDownload(const std::string& path, size_t bytes);
  // Downloads of `path` serve one flipped byte (the LFS SHA-256 stays).
  void Corrupt(const std::string& path);
  // Requests for file bytes that asked for a range (resumed downloads).
  int ranged_requests() const;
  // Downloads of file bytes (GET /cdn and non-LFS GET resolve).
  int downloads() const;

 private:
  struct File {
    std::string bytes;
    std::string sha256;
    bool lfs = false;
  };
  MockHub() = default;
  void Routes();

  // Fixed after Start.
  MockHubRepo repo_;
  std::map<std::string, File> files_;  // by repository path
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::string endpoint_;

  mutable absl::Mutex mu_;
  std::map<std::string, size_t> cut_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, bool> corrupt_ ABSL_GUARDED_BY(mu_);
  int ranged_ ABSL_GUARDED_BY(mu_) = 0;
  int downloads_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace dd::testing

#endif  // TESTS_TESTING_MOCK_HUB_H_
