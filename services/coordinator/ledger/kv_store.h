// KvStore: the small ordered key-value interface the coordinator's ledger is
// written against, with a RocksDB and an in-memory implementation that pass
// one conformance suite (kv_store_test.cc). Every Write is atomic; the RocksDB
// store also makes it durable (fsync) before returning, so an acknowledged
// change survives kill -9.
#ifndef SERVICES_COORDINATOR_LEDGER_KV_STORE_H_
#define SERVICES_COORDINATOR_LEDGER_KV_STORE_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dd::coordinator {

// A set of puts and deletes applied together by KvStore::Write.
class KvBatch {
 public:
  void Put(std::string key, std::string value) {
    ops_.emplace_back(std::move(key), std::move(value));
  }
  void Delete(std::string key) { ops_.emplace_back(std::move(key), std::nullopt); }
  bool empty() const { return ops_.empty(); }
  const std::vector<std::pair<std::string, std::optional<std::string>>>& ops() const {
    return ops_;
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> ops_;
};

class KvStore {
 public:
  virtual ~KvStore() = default;

  // The value of `key`, or nullopt when absent. Internal/DataLoss on I/O or
  // corruption errors.
  virtual absl::StatusOr<std::optional<std::string>> Get(absl::string_view key) = 0;

  // Applies `batch` atomically (all or nothing); durable when OK is returned
  // (for persistent stores).
  virtual absl::Status Write(const KvBatch& batch) = 0;

  // Calls `fn` for every key starting with `prefix`, in key order, until it
  // returns false.
  virtual absl::Status ScanPrefix(
      absl::string_view prefix,
      const std::function<bool(absl::string_view key, absl::string_view value)>& fn) = 0;
};

// Opens (creating if missing) a RocksDB database at `path`. Writes use
// WriteOptions::sync. FailedPrecondition when another process holds the
// database (RocksDB's LOCK file), with the path in the message.
absl::StatusOr<std::unique_ptr<KvStore>> OpenRocksDbKvStore(const std::string& path);

// A store in memory (tests, throw-away runs). Thread-safe like the RocksDB one.
std::unique_ptr<KvStore> NewInMemoryKvStore();

}  // namespace dd::coordinator

#endif  // SERVICES_COORDINATOR_LEDGER_KV_STORE_H_
