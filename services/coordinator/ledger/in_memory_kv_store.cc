#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "services/coordinator/ledger/kv_store.h"

namespace dd::coordinator {
namespace {

class InMemoryKvStore : public KvStore {
 public:
  absl::StatusOr<std::optional<std::string>> Get(absl::string_view key) override {
    absl::MutexLock lock(&mu_);
    auto it = map_.find(std::string(key));
    if (it == map_.end()) return std::nullopt;
    return it->second;
  }

  absl::Status Write(const KvBatch& batch) override {
    absl::MutexLock lock(&mu_);
    for (const auto& [key, value] : batch.ops()) {
      if (value.has_value()) {
        map_[key] = *value;
      } else {
        map_.erase(key);
      }
    }
    return absl::OkStatus();
  }

  absl::Status ScanPrefix(
      absl::string_view prefix,
      const std::function<bool(absl::string_view, absl::string_view)>& fn) override {
    absl::MutexLock lock(&mu_);
    for (auto it = map_.lower_bound(std::string(prefix));
         it != map_.end() && absl::StartsWith(it->first, prefix); ++it) {
      if (!fn(it->first, it->second)) break;
    }
    return absl::OkStatus();
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, std::string> map_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<KvStore> NewInMemoryKvStore() { return std::make_unique<InMemoryKvStore>(); }

}  // namespace dd::coordinator
