#include <filesystem>

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/coordinator/ledger/kv_store.h"

namespace dd::coordinator {
namespace {

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  std::string msg = absl::StrCat(what, ": ", s.ToString());
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsIOError() && absl::StrContains(s.ToString(), "lock")) {
    return absl::FailedPreconditionError(
        absl::StrCat(msg, " (is another coordinator using this --db_dir?)"));
  }
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(msg);
  return absl::InternalError(msg);
}

class RocksDbKvStore : public KvStore {
 public:
  explicit RocksDbKvStore(std::unique_ptr<rocksdb::DB> db) : db_(std::move(db)) {}

  absl::StatusOr<std::optional<std::string>> Get(absl::string_view key) override {
    std::string value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), rocksdb::Slice(key.data(), key.size()),
                                 &value);
    if (s.IsNotFound()) return std::nullopt;
    if (!s.ok()) return FromRocks(s, "rocksdb get");
    return value;
  }

  absl::Status Write(const KvBatch& batch) override {
    rocksdb::WriteBatch wb;
    for (const auto& [key, value] : batch.ops()) {
      if (value.has_value()) {
        wb.Put(key, *value);
      } else {
        wb.Delete(key);
      }
    }
    rocksdb::WriteOptions options;
    options.sync = true;  // acknowledged means on disk
    return FromRocks(db_->Write(options, &wb), "rocksdb write");
  }

  absl::Status ScanPrefix(
      absl::string_view prefix,
      const std::function<bool(absl::string_view, absl::string_view)>& fn) override {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    for (it->Seek(rocksdb::Slice(prefix.data(), prefix.size())); it->Valid(); it->Next()) {
      absl::string_view key(it->key().data(), it->key().size());
      if (!absl::StartsWith(key, prefix)) break;
      if (!fn(key, absl::string_view(it->value().data(), it->value().size()))) break;
    }
    return FromRocks(it->status(), "rocksdb scan");
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvStore>> OpenRocksDbKvStore(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create ledger folder ", path, ": ", ec.message()));
  }
  rocksdb::Options options;
  options.create_if_missing = true;
  options.paranoid_checks = true;
  // The ledger holds a few MB (chunk and peer records), but every change is
  // a write: with RocksDB's default 64 MiB write buffers (two of them) the
  // coordinator's memory grew by ~90 MiB under churn before it levelled off
  // (tests/soak:services_soak_bench, docs/benchmarks.md).
  options.write_buffer_size = 8 << 20;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(options, path, &raw);
  if (!s.ok()) return FromRocks(s, absl::StrCat("cannot open ledger database ", path));
  return std::unique_ptr<KvStore>(new RocksDbKvStore(std::unique_ptr<rocksdb::DB>(raw)));
}

}  // namespace dd::coordinator
