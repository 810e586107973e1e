// One conformance suite for the chunk ledger, run on every KvStore backend
// (RocksDB on disk, in memory). Time is a FakeClock: no sleeps.
#include <filesystem>
#include <set>
#include <thread>

#include "gtest/gtest.h"
#include "services/coordinator/ledger/chunk_ledger.h"

namespace dd::coordinator {
namespace {

// Forwards to a store the fixture keeps, so an in-memory ledger can be
// "reopened", and fails writes on demand (fault injection).
class TestStore : public KvStore {
 public:
  TestStore(KvStore* inner, bool* fail_writes) : inner_(inner), fail_writes_(fail_writes) {}
  absl::StatusOr<std::optional<std::string>> Get(absl::string_view key) override {
    return inner_->Get(key);
  }
  absl::Status Write(const KvBatch& batch) override {
    if (*fail_writes_) return absl::InternalError("injected write failure");
    return inner_->Write(batch);
  }
  absl::Status ScanPrefix(
      absl::string_view prefix,
      const std::function<bool(absl::string_view, absl::string_view)>& fn) override {
    return inner_->ScanPrefix(prefix, fn);
  }

 private:
  KvStore* inner_;
  bool* fail_writes_;
};

enum class Backend { kRocksDb, kInMemory };

class ChunkLedgerConformance : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    identity_ = {"run-a", "manifest-1", {10, 10, 10, 10, 7}};
    ASSERT_TRUE(OpenBackend().ok());
    ledger_ = Reopen(identity_);
  }

  absl::Status OpenBackend() {
    if (GetParam() == Backend::kRocksDb) {
      path_ = std::string(std::getenv("TEST_TMPDIR")) + "/ledger-" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name();
      std::filesystem::remove_all(path_);
    } else {
      memory_ = NewInMemoryKvStore();
    }
    return absl::OkStatus();
  }

  std::unique_ptr<KvStore> Store() {
    if (GetParam() == Backend::kRocksDb) {
      rocks_.reset();  // release the LOCK before reopening
      auto s = OpenRocksDbKvStore(path_);
      EXPECT_TRUE(s.ok()) << s.status();
      rocks_ = std::move(*s);
      return std::make_unique<TestStore>(rocks_.get(), &fail_writes_);
    }
    return std::make_unique<TestStore>(memory_.get(), &fail_writes_);
  }

  absl::StatusOr<std::unique_ptr<ChunkLedger>> TryReopen(const LedgerIdentity& identity) {
    ledger_.reset();
    return ChunkLedger::Open(Store(), identity, &clock_);
  }

  std::unique_ptr<ChunkLedger> Reopen(const LedgerIdentity& identity) {
    auto l = TryReopen(identity);
    EXPECT_TRUE(l.ok()) << l.status();
    return l.ok() ? std::move(*l) : nullptr;
  }

  PeerHandle Join(const std::string& id = "", const std::string& address = "") {
    PeerInfo info;
    info.listen_address = address;
    auto r = ledger_->JoinPeer(id, info);
    EXPECT_TRUE(r.ok()) << r.status();
    return r->peer;
  }

  std::vector<LeaseInfo> Acquire(const PeerHandle& p, uint32_t n) {
    auto r = ledger_->Acquire(p, n, absl::Minutes(20));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::vector<LeaseInfo>{};
  }

  FakeClock clock_;
  LedgerIdentity identity_;
  std::string path_;
  std::unique_ptr<KvStore> memory_;
  std::unique_ptr<KvStore> rocks_;
  bool fail_writes_ = false;
  std::unique_ptr<ChunkLedger> ledger_;
};

TEST_P(ChunkLedgerConformance, LeasesAreExclusiveAndLeastTrainedFirst) {
  PeerHandle a = Join(), b = Join();
  auto la = Acquire(a, 3);
  auto lb = Acquire(b, 3);
  ASSERT_EQ(la.size(), 3u);
  ASSERT_EQ(lb.size(), 2u);  // only 5 chunks
  std::set<uint64_t> ids;
  for (const auto& l : la) ids.insert(l.chunk_id);
  for (const auto& l : lb) ids.insert(l.chunk_id);
  EXPECT_EQ(ids.size(), 5u);
  EXPECT_EQ(la[0].chunk_id, 0u);
  EXPECT_TRUE(Acquire(a, 1).empty());
  // Complete chunk 0: it is now trained once, so it comes after the others.
  ASSERT_TRUE(ledger_->Complete(a, 0, la[0].lease_id, 10).ok());
  ASSERT_TRUE(ledger_->Release(b, {lb[0].lease_id}).ok());
  auto next = Acquire(a, 2);
  ASSERT_EQ(next.size(), 2u);
  EXPECT_EQ(next[0].chunk_id, lb[0].chunk_id);  // untrained first
  EXPECT_EQ(next[0].epoch, 0u);
  EXPECT_EQ(next[1].chunk_id, 0u);
  EXPECT_EQ(next[1].epoch, 1u);
}

TEST_P(ChunkLedgerConformance, RenewExtendsAndReportsLostLeases) {
  PeerHandle a = Join(), b = Join();
  auto la = Acquire(a, 2);
  auto lb = Acquire(b, 1);
  clock_.Advance(absl::Minutes(15));
  auto r = ledger_->Renew(a, {la[0].lease_id, la[1].lease_id, lb[0].lease_id}, absl::Minutes(20));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->renewed.size(), 2u);
  EXPECT_EQ(r->lost, std::vector<uint64_t>{lb[0].lease_id});
  clock_.Advance(absl::Minutes(10));  // a's renewed leases live on, b's expired
  EXPECT_EQ(*ledger_->ExpireDue(), 1u);
  EXPECT_EQ(ledger_->Stats().leased, 2u);
}

TEST_P(ChunkLedgerConformance, ExpiredLeaseGoesToAnotherPeerAndLateCompletionCountsNowhere) {
  PeerHandle a = Join(), b = Join();
  auto la = Acquire(a, 5);
  ASSERT_EQ(la.size(), 5u);
  clock_.Advance(absl::Minutes(21));
  auto lb = Acquire(b, 1);  // expiry happens as part of the acquire
  ASSERT_EQ(lb.size(), 1u);
  EXPECT_EQ(lb[0].chunk_id, 0u);
  auto late = ledger_->Complete(a, 0, la[0].lease_id, 10);
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition);
  // Even before another peer took it, an expired lease cannot complete.
  auto late2 = ledger_->Complete(a, 1, la[1].lease_id, 10);
  EXPECT_EQ(late2.status().code(), absl::StatusCode::kFailedPrecondition);
  LedgerStats stats = ledger_->Stats();
  EXPECT_EQ(stats.completions, 0u);
  EXPECT_EQ(stats.samples_done, 0u);
  ASSERT_TRUE(ledger_->Complete(b, 0, lb[0].lease_id, 9).ok());
  EXPECT_EQ(ledger_->Stats().samples_done, 9u);
}

TEST_P(ChunkLedgerConformance, DoubleCompletionCountsOnceAndForeignCompletionIsRefused) {
  PeerHandle a = Join(), b = Join();
  auto la = Acquire(a, 1);
  auto first = ledger_->Complete(a, 0, la[0].lease_id, 10);
  ASSERT_TRUE(first.ok());
  EXPECT_FALSE(first->duplicate);
  auto again = ledger_->Complete(a, 0, la[0].lease_id, 10);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(ledger_->Stats().completions, 1u);
  EXPECT_EQ(ledger_->Stats().samples_done, 10u);
  auto lb = Acquire(b, 1);
  EXPECT_EQ(ledger_->Complete(a, lb[0].chunk_id, lb[0].lease_id, 10).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ledger_->Complete(a, lb[0].chunk_id, 0, 10).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ledger_->Stats().completions, 1u);
}

TEST_P(ChunkLedgerConformance, ACompletionWithNoSamplesReturnsTheChunkUntilItIsMarkedBad) {
  PeerHandle a = Join();
  for (uint32_t failure = 1; failure <= kFailuresBeforeBad; ++failure) {
    // Least trained first: chunk 0 comes back while it is not counted.
    auto la = Acquire(a, 1);
    ASSERT_EQ(la.size(), 1u);
    ASSERT_EQ(la[0].chunk_id, 0u);
    auto done = ledger_->Complete(a, 0, la[0].lease_id, 0);
    ASSERT_TRUE(done.ok()) << done.status();
    const bool last = failure == kFailuresBeforeBad;
    EXPECT_EQ(done->returned_untrained, !last);
    EXPECT_EQ(done->marked_bad, last);
    EXPECT_EQ(ledger_->Stats().done, last ? 1u : 0u);
    // A retried (duplicate) completion changes nothing.
    EXPECT_TRUE(ledger_->Complete(a, 0, la[0].lease_id, 0)->duplicate);
  }
  std::optional<uint64_t> next;
  auto listed = ledger_->ListChunks(0, 1, {}, &next);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_TRUE(listed[0].bad());
  EXPECT_EQ(listed[0].samples_trained(), 0u);
  EXPECT_EQ(listed[0].failed_completions(), kFailuresBeforeBad);
}

TEST_P(ChunkLedgerConformance, InactivePeersAreForgottenAfterAWhileAndForGood) {
  PeerHandle gone = Join(), stays = Join();
  ASSERT_TRUE(ledger_->RemovePeer(gone.peer_id, gone.incarnation).ok());
  // Not yet: it left just now.
  EXPECT_EQ(*ledger_->ForgetInactivePeers(clock_.Now() - absl::Hours(1)), 0u);
  clock_.Advance(absl::Hours(2));
  EXPECT_EQ(*ledger_->ForgetInactivePeers(clock_.Now() - absl::Hours(1)), 1u);
  // Its id is unknown now, also after a restart; the active peer is kept.
  ledger_ = Reopen(identity_);
  PeerInfo info;
  EXPECT_EQ(ledger_->JoinPeer(gone.peer_id, info).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(ledger_->CheckPeer(stays).ok());
}

TEST_P(ChunkLedgerConformance, EpochRollsOverWhenEveryChunkIsDone) {
  PeerHandle a = Join();
  for (int round = 0; round < 2; ++round) {
    EXPECT_EQ(ledger_->Stats().epoch, static_cast<uint64_t>(round));
    auto leases = Acquire(a, 10);
    ASSERT_EQ(leases.size(), 5u);
    for (size_t i = 0; i < leases.size(); ++i) {
      LedgerStats s = ledger_->Stats();
      EXPECT_EQ(s.done, i);
      ASSERT_TRUE(ledger_->Complete(a, leases[i].chunk_id, leases[i].lease_id, 5).ok());
    }
  }
  LedgerStats s = ledger_->Stats();
  EXPECT_EQ(s.epoch, 2u);
  EXPECT_EQ(s.pending, 5u);
  EXPECT_EQ(s.done, 0u);
  EXPECT_EQ(s.completions, 10u);
  EXPECT_EQ(s.samples_done, 50u);
}

TEST_P(ChunkLedgerConformance, ReopenKeepsEveryAcknowledgedChange) {
  PeerHandle a = Join("", "10.0.0.1:5000");
  auto la = Acquire(a, 3);
  ASSERT_TRUE(ledger_->Complete(a, la[0].chunk_id, la[0].lease_id, 7).ok());
  ledger_ = Reopen(identity_);
  ASSERT_NE(ledger_, nullptr);
  LedgerStats s = ledger_->Stats();
  EXPECT_EQ(s.completions, 1u);
  EXPECT_EQ(s.samples_done, 7u);
  EXPECT_EQ(s.leased, 2u);
  EXPECT_TRUE(ledger_->CheckPeer(a).ok());
  // The surviving leases can still be completed, the completed one repeated.
  ASSERT_TRUE(ledger_->Complete(a, la[1].chunk_id, la[1].lease_id, 7).ok());
  EXPECT_TRUE(ledger_->Complete(a, la[0].chunk_id, la[0].lease_id, 7)->duplicate);
  // New peers and leases do not reuse ids.
  PeerHandle b = Join();
  EXPECT_NE(b.peer_id, a.peer_id);
  auto lb = Acquire(b, 1);
  ASSERT_EQ(lb.size(), 1u);
  EXPECT_GT(lb[0].lease_id, la[2].lease_id);
}

TEST_P(ChunkLedgerConformance, RefusesAnotherRunOrAnotherDataset) {
  Join();
  LedgerIdentity other_run = identity_;
  other_run.run_id = "run-b";
  auto r = TryReopen(other_run);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("run-a"), absl::string_view::npos);
  LedgerIdentity other_data = identity_;
  other_data.manifest_sha256 = "manifest-2";
  EXPECT_EQ(TryReopen(other_data).status().code(), absl::StatusCode::kFailedPrecondition);
  LedgerIdentity fewer = identity_;
  fewer.chunk_samples.pop_back();
  EXPECT_EQ(TryReopen(fewer).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(Reopen(identity_), nullptr);
}

TEST_P(ChunkLedgerConformance, RejoinStartsANewIncarnationAndReleasesTheOld) {
  PeerHandle a1 = Join("", "10.0.0.1:5000");
  EXPECT_EQ(a1.incarnation, 1u);
  auto la = Acquire(a1, 2);
  PeerHandle a2 = Join(a1.peer_id, "10.0.0.9:6000");  // restarted elsewhere
  EXPECT_EQ(a2.peer_id, a1.peer_id);
  EXPECT_EQ(a2.incarnation, 2u);
  EXPECT_EQ(ledger_->Stats().leased, 0u);
  EXPECT_EQ(ledger_->CheckPeer(a1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ledger_->Complete(a1, la[0].chunk_id, la[0].lease_id, 1).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ledger_->Acquire(a1, 1, absl::Minutes(1)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto unknown = ledger_->JoinPeer("peer-999-abcdef", PeerInfo{});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_P(ChunkLedgerConformance, ANewPeerAtTheSameAddressReplacesTheOldOne) {
  PeerHandle old = Join("", "192.0.2.7:31337");
  Acquire(old, 2);
  PeerInfo info;
  info.listen_address = "0.0.0.0:31337";
  info.public_address = "192.0.2.7:31337";
  auto fresh = ledger_->JoinPeer("", info);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->replaced_peers, std::vector<std::string>{old.peer_id});
  EXPECT_EQ(fresh->released_chunks, 2u);
  EXPECT_EQ(ledger_->CheckPeer(old).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ledger_->ActivePeers().size(), 1u);
}

TEST_P(ChunkLedgerConformance, RemovedPeerLosesItsLeasesAndMustRejoin) {
  PeerHandle a = Join(), b = Join();
  Acquire(a, 3);
  EXPECT_EQ(*ledger_->RemovePeer(a.peer_id), 3u);
  EXPECT_EQ(ledger_->CheckPeer(a).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ledger_->RemovePeer(a.peer_id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Acquire(b, 5).size(), 5u);
  PeerHandle a2 = Join(a.peer_id);
  EXPECT_EQ(a2.incarnation, 2u);
}

TEST_P(ChunkLedgerConformance, BadInputIsRefusedAndChangesNothing) {
  PeerHandle a = Join();
  auto la = Acquire(a, 1);
  EXPECT_EQ(ledger_->Complete(a, 0, la[0].lease_id, 11).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ledger_->Complete(a, 99, la[0].lease_id, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ledger_->Acquire({"nobody", 1}, 1, absl::Minutes(1)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ledger_->Release(a, {la[0].lease_id, 12345}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ledger_->AdminRelease(99).status().code(), absl::StatusCode::kNotFound);
  LedgerStats s = ledger_->Stats();
  EXPECT_EQ(s.leased, 1u);
  EXPECT_EQ(s.completions, 0u);
  EXPECT_TRUE(*ledger_->AdminRelease(0));
  EXPECT_EQ(ledger_->Stats().leased, 0u);
}

TEST_P(ChunkLedgerConformance, AFailedWriteStopsChangesAndRestartRecoversTheDurableState) {
  PeerHandle a = Join();
  auto la = Acquire(a, 2);
  EXPECT_TRUE(ledger_->AcceptsChanges());
  fail_writes_ = true;
  EXPECT_FALSE(ledger_->Complete(a, la[0].chunk_id, la[0].lease_id, 5).ok());
  fail_writes_ = false;
  EXPECT_FALSE(ledger_->AcceptsChanges());  // what health reports (NOT_SERVING)
  // Memory may be ahead of the store now: no further change is accepted.
  EXPECT_EQ(ledger_->Acquire(a, 2, absl::Minutes(1)).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(ledger_->Complete(a, la[1].chunk_id, la[1].lease_id, 5).status().code(),
            absl::StatusCode::kUnavailable);
  // A restart comes back to the last acknowledged state.
  ledger_ = Reopen(identity_);
  EXPECT_TRUE(ledger_->AcceptsChanges());
  LedgerStats s = ledger_->Stats();
  EXPECT_EQ(s.completions, 0u);
  EXPECT_EQ(s.leased, 2u);
  ASSERT_TRUE(ledger_->Complete(a, la[0].chunk_id, la[0].lease_id, 5).ok());
  EXPECT_EQ(ledger_->Stats().completions, 1u);
}

TEST_P(ChunkLedgerConformance, ConcurrentPeersNeverShareALease) {
  std::vector<PeerHandle> peers;
  for (int i = 0; i < 8; ++i) peers.push_back(Join());
  std::vector<std::thread> threads;
  absl::Mutex mu;
  std::vector<uint64_t> completed;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 10; ++round) {
        auto leases = ledger_->Acquire(peers[t], 1, absl::Minutes(5));
        ASSERT_TRUE(leases.ok());
        for (const auto& l : *leases) {
          auto r = ledger_->Complete(peers[t], l.chunk_id, l.lease_id, 1);
          ASSERT_TRUE(r.ok()) << r.status();
          ASSERT_FALSE(r->duplicate);
          absl::MutexLock lock(&mu);
          completed.push_back(l.chunk_id);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  LedgerStats s = ledger_->Stats();
  EXPECT_EQ(s.completions, completed.size());
  EXPECT_EQ(s.leased, 0u);
  ledger_ = Reopen(identity_);
  EXPECT_EQ(ledger_->Stats().completions, completed.size());
}

TEST_P(ChunkLedgerConformance, ListChunksPagesAndFilters) {
  PeerHandle a = Join();
  Acquire(a, 2);
  std::optional<uint64_t> next;
  auto page = ledger_->ListChunks(0, 3, {}, &next);
  EXPECT_EQ(page.size(), 3u);
  ASSERT_TRUE(next.has_value());
  auto rest = ledger_->ListChunks(*next, 3, {}, &next);
  EXPECT_EQ(rest.size(), 2u);
  EXPECT_FALSE(next.has_value());
  ChunkFilter leased;
  leased.state = ChunkFilter::State::kLeased;
  EXPECT_EQ(ledger_->ListChunks(0, 10, leased, &next).size(), 2u);
  ChunkFilter mine;
  mine.owner_peer_id = a.peer_id;
  EXPECT_EQ(ledger_->ListChunks(0, 10, mine, &next).size(), 2u);
  EXPECT_EQ(ledger_->LeasesHeldBy(a.peer_id), 2u);
}

INSTANTIATE_TEST_SUITE_P(Backends, ChunkLedgerConformance,
                         ::testing::Values(Backend::kRocksDb, Backend::kInMemory),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param == Backend::kRocksDb ? std::string("RocksDb")
                                                                  : std::string("InMemory");
                         });

}  // namespace
}  // namespace dd::coordinator

namespace dd::coordinator {
namespace {

TEST_P(ChunkLedgerConformance, GlobalStepSurvivesAReopenAndNeverGoesBack) {
  EXPECT_EQ(ledger_->GlobalStep(), 0u);
  ASSERT_TRUE(ledger_->SetGlobalStep(41).ok());
  ASSERT_TRUE(ledger_->SetGlobalStep(42).ok());
  EXPECT_TRUE(ledger_->SetGlobalStep(42).ok());  // unchanged
  EXPECT_EQ(ledger_->SetGlobalStep(40).code(), absl::StatusCode::kFailedPrecondition);
  ledger_ = Reopen(identity_);
  ASSERT_NE(ledger_, nullptr);
  EXPECT_EQ(ledger_->GlobalStep(), 42u);
  // A step that could not be written is not taken, and nothing else is
  // accepted after it (memory may be ahead of the store).
  fail_writes_ = true;
  EXPECT_FALSE(ledger_->SetGlobalStep(43).ok());
  fail_writes_ = false;
  EXPECT_EQ(ledger_->SetGlobalStep(44).code(), absl::StatusCode::kUnavailable);
  ledger_ = Reopen(identity_);
  EXPECT_EQ(ledger_->GlobalStep(), 42u);
}

}  // namespace
}  // namespace dd::coordinator
