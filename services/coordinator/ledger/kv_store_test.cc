// The KvStore contract, on both backends.
#include <filesystem>

#include "gtest/gtest.h"
#include "services/coordinator/ledger/kv_store.h"

namespace dd::coordinator {
namespace {

class KvStoreTest : public ::testing::TestWithParam<bool> {
 protected:
  std::unique_ptr<KvStore> Open() {
    if (!GetParam()) return NewInMemoryKvStore();
    std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/kv";
    auto s = OpenRocksDbKvStore(path);
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(*s);
  }
};

TEST_P(KvStoreTest, BatchesPrefixScansAndDeletes) {
  auto store = Open();
  KvBatch b;
  b.Put("a/1", "x");
  b.Put("a/2", "y");
  b.Put("b/1", "z");
  ASSERT_TRUE(store->Write(b).ok());
  EXPECT_EQ(**store->Get("a/2"), "y");
  EXPECT_FALSE(store->Get("a/3")->has_value());
  std::vector<std::string> keys;
  ASSERT_TRUE(store->ScanPrefix("a/", [&](absl::string_view k, absl::string_view) {
    keys.emplace_back(k);
    return true;
  }).ok());
  EXPECT_EQ(keys, (std::vector<std::string>{"a/1", "a/2"}));
  KvBatch d;
  d.Delete("a/1");
  d.Put("a/2", "w");
  ASSERT_TRUE(store->Write(d).ok());
  EXPECT_FALSE(store->Get("a/1")->has_value());
  EXPECT_EQ(**store->Get("a/2"), "w");
}

TEST(RocksDbKvStore, SecondOpenOfTheSameDatabaseIsRefused) {
  std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/locked";
  auto first = OpenRocksDbKvStore(path);
  ASSERT_TRUE(first.ok());
  auto second = OpenRocksDbKvStore(path);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
}

INSTANTIATE_TEST_SUITE_P(Backends, KvStoreTest, ::testing::Bool());

}  // namespace
}  // namespace dd::coordinator
