#include "services/coordinator/ledger/chunk_ledger.h"

#include <random>

#include <glog/logging.h>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"

namespace dd::coordinator {
namespace {

using internal::ChunkRecord;
using internal::LedgerMeta;
using internal::PeerRecord;

constexpr uint32_t kLedgerFormat = 1;
constexpr char kMetaKey[] = "meta";
constexpr char kGlobalStepKey[] = "global_step";
constexpr char kChunkPrefix[] = "chunk/";
constexpr char kPeerPrefix[] = "peer/";

std::string ChunkKey(uint64_t id) {
  std::string key = kChunkPrefix;
  for (int shift = 56; shift >= 0; shift -= 8) key.push_back(static_cast<char>(id >> shift));
  return key;
}

std::string PeerKey(const std::string& id) { return absl::StrCat(kPeerPrefix, id); }

std::string EffectiveAddress(const PeerRecord& p) {
  if (p.client_only()) return "";
  return p.public_address().empty() ? p.listen_address() : p.public_address();
}

void ClearLease(ChunkRecord* c) {
  c->set_lease_id(0);
  c->clear_owner_peer_id();
  c->set_owner_incarnation(0);
  c->set_deadline_unix_ms(0);
}

}  // namespace

struct ChunkLedger::PendingWrite {
  explicit PendingWrite(KvBatch b) : batch(std::move(b)) {}
  KvBatch batch;
  absl::Status status;
  absl::Notification done;
};

struct ChunkLedger::Txn {
  std::map<uint64_t, ChunkRecord> chunks;
  std::map<std::string, PeerRecord> peers;
  std::vector<std::string> forgotten_peers;  // records deleted
  bool meta_changed = false;
  uint64_t next_peer_number = 0;
  uint64_t next_lease_id = 0;
  std::optional<uint64_t> global_step;
};

ChunkLedger::ChunkLedger(std::unique_ptr<KvStore> store, Clock* clock)
    : store_(std::move(store)), clock_(clock) {}

ChunkLedger::~ChunkLedger() {
  {
    absl::MutexLock lock(&queue_mu_);
    stopping_ = true;
  }
  if (committer_.joinable()) committer_.join();
}

void ChunkLedger::CommitLoop() {
  while (true) {
    std::vector<std::shared_ptr<PendingWrite>> group;
    {
      absl::MutexLock lock(&queue_mu_);
      queue_mu_.Await(absl::Condition(
          +[](ChunkLedger* l) ABSL_EXCLUSIVE_LOCKS_REQUIRED(l->queue_mu_) {
            return l->stopping_ || !l->queue_.empty();
          },
          this));
      if (queue_.empty()) return;  // stopping and drained
      group.swap(queue_);
    }
    // One synced write for everything queued: later ops in the group come
    // later in the batch, so the last write of a key wins, as in memory.
    KvBatch merged;
    for (const auto& w : group) {
      for (const auto& [key, value] : w->batch.ops()) {
        if (value.has_value()) {
          merged.Put(key, *value);
        } else {
          merged.Delete(key);
        }
      }
    }
    absl::Status status = poisoned_ ? absl::UnavailableError("ledger is stopped")
                                    : store_->Write(merged);
    if (!status.ok() && !poisoned_.exchange(true)) {
      LOG(ERROR) << "ledger write failed; refusing further changes until restart: " << status;
    }
    for (const auto& w : group) {
      w->status = status;
      w->done.Notify();
    }
  }
}

absl::StatusOr<std::unique_ptr<ChunkLedger>> ChunkLedger::Open(std::unique_ptr<KvStore> store,
                                                               const LedgerIdentity& identity,
                                                               Clock* clock) {
  if (identity.run_id.empty()) return absl::InvalidArgumentError("run_id is empty");
  std::unique_ptr<ChunkLedger> ledger(new ChunkLedger(std::move(store), clock));
  absl::Status s = ledger->Load(identity);
  if (!s.ok()) return s;
  ledger->committer_ = std::thread([l = ledger.get()] { l->CommitLoop(); });
  return ledger;
}

absl::Status ChunkLedger::Load(const LedgerIdentity& identity) {
  absl::MutexLock lock(&mu_);
  auto meta_bytes = store_->Get(kMetaKey);
  if (!meta_bytes.ok()) return meta_bytes.status();
  LedgerMeta meta;
  if (!meta_bytes->has_value()) {
    // A new ledger: every chunk unleased, never trained. One batch.
    meta.set_run_id(identity.run_id);
    meta.set_manifest_sha256(identity.manifest_sha256);
    meta.set_num_chunks(identity.chunk_samples.size());
    meta.set_next_peer_number(1);
    meta.set_next_lease_id(1);
    meta.set_format_version(kLedgerFormat);
    KvBatch batch;
    batch.Put(kMetaKey, meta.SerializeAsString());
    for (size_t i = 0; i < identity.chunk_samples.size(); ++i) {
      ChunkRecord c;
      c.set_chunk_id(i);
      c.set_num_samples(identity.chunk_samples[i]);
      batch.Put(ChunkKey(i), c.SerializeAsString());
    }
    if (absl::Status s = store_->Write(batch); !s.ok()) return s;
    LOG(INFO) << "created ledger for run " << identity.run_id << " with "
              << identity.chunk_samples.size() << " chunks";
  } else if (!meta.ParseFromString(**meta_bytes)) {
    return absl::DataLossError("ledger metadata is corrupt");
  }
  if (meta.run_id() != identity.run_id) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the ledger database belongs to run \"", meta.run_id(), "\", not \"", identity.run_id,
        "\": use another --db_dir or the config's run_id"));
  }
  if (meta.manifest_sha256() != identity.manifest_sha256 ||
      meta.num_chunks() != identity.chunk_samples.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the ledger was made for another dataset (manifest ", meta.manifest_sha256(), ", ",
        meta.num_chunks(), " chunks); the dataset service now serves manifest ",
        identity.manifest_sha256, " with ", identity.chunk_samples.size(), " chunks"));
  }
  meta_run_id_ = meta.run_id();
  meta_manifest_ = meta.manifest_sha256();
  auto step = store_->Get(kGlobalStepKey);
  if (!step.ok()) return step.status();
  if (step->has_value() && !absl::SimpleAtoi(**step, &global_step_)) {
    return absl::DataLossError(absl::StrCat("ledger key ", kGlobalStepKey, " is not a number"));
  }
  next_peer_number_ = meta.next_peer_number();
  next_lease_id_ = meta.next_lease_id();

  chunks_.assign(meta.num_chunks(), ChunkRecord());
  std::vector<bool> seen(meta.num_chunks(), false);
  absl::Status parse_error;
  absl::Status s = store_->ScanPrefix(kChunkPrefix, [&](absl::string_view, absl::string_view v) {
    ChunkRecord c;
    if (!c.ParseFromArray(v.data(), v.size()) || c.chunk_id() >= chunks_.size()) {
      parse_error = absl::DataLossError("a ledger chunk record is corrupt");
      return false;
    }
    seen[c.chunk_id()] = true;
    chunks_[c.chunk_id()] = std::move(c);
    return true;
  });
  if (!s.ok()) return s;
  if (!parse_error.ok()) return parse_error;
  for (size_t i = 0; i < seen.size(); ++i) {
    if (!seen[i]) return absl::DataLossError(absl::StrCat("ledger lacks chunk ", i));
  }
  s = store_->ScanPrefix(kPeerPrefix, [&](absl::string_view, absl::string_view v) {
    PeerRecord p;
    if (!p.ParseFromArray(v.data(), v.size())) {
      parse_error = absl::DataLossError("a ledger peer record is corrupt");
      return false;
    }
    peers_[p.peer_id()] = std::move(p);
    return true;
  });
  if (!s.ok()) return s;
  if (!parse_error.ok()) return parse_error;
  for (const ChunkRecord& c : chunks_) Index(c);

  // Leases whose owner is no longer an active current incarnation (a crash
  // between decisions cannot leave one, but a ledger edited by hand could).
  Txn txn;
  for (const ChunkRecord& c : chunks_) {
    if (c.lease_id() == 0) continue;
    auto p = peers_.find(c.owner_peer_id());
    if (p == peers_.end() || !p->second.active() ||
        p->second.incarnation() != c.owner_incarnation()) {
      ChunkRecord& r = txn.chunks[c.chunk_id()] = c;
      ClearLease(&r);
    }
  }
  if (!txn.chunks.empty()) {
    LOG(WARNING) << "releasing " << txn.chunks.size() << " leases of unknown peers";
    if (absl::Status s = store_->Write(BuildBatch(txn)); !s.ok()) return s;
    Apply(&txn);
  }
  return absl::OkStatus();
}

void ChunkLedger::Index(const ChunkRecord& c) {
  if (c.lease_id() != 0) {
    deadlines_.insert({c.deadline_unix_ms(), c.chunk_id()});
    lease_to_chunk_[c.lease_id()] = c.chunk_id();
    owned_[c.owner_peer_id()].insert(c.chunk_id());
  } else {
    unleased_.insert({c.times_trained(), c.chunk_id()});
  }
  by_times_[c.times_trained()]++;
  samples_done_ += c.samples_trained();
  completions_ += c.times_trained();
}

void ChunkLedger::Unindex(const ChunkRecord& c) {
  if (c.lease_id() != 0) {
    deadlines_.erase({c.deadline_unix_ms(), c.chunk_id()});
    lease_to_chunk_.erase(c.lease_id());
    auto it = owned_.find(c.owner_peer_id());
    if (it != owned_.end()) {
      it->second.erase(c.chunk_id());
      if (it->second.empty()) owned_.erase(it);
    }
  } else {
    unleased_.erase({c.times_trained(), c.chunk_id()});
  }
  auto t = by_times_.find(c.times_trained());
  if (--t->second == 0) by_times_.erase(t);
  samples_done_ -= c.samples_trained();
  completions_ -= c.times_trained();
}

KvBatch ChunkLedger::BuildBatch(const Txn& txn) const {
  KvBatch batch;
  for (const auto& [id, c] : txn.chunks) batch.Put(ChunkKey(id), c.SerializeAsString());
  for (const auto& [id, p] : txn.peers) batch.Put(PeerKey(id), p.SerializeAsString());
  for (const std::string& id : txn.forgotten_peers) batch.Delete(PeerKey(id));
  if (txn.meta_changed) {
    LedgerMeta meta;
    meta.set_run_id(meta_run_id_);
    meta.set_manifest_sha256(meta_manifest_);
    meta.set_num_chunks(chunks_.size());
    meta.set_next_peer_number(txn.next_peer_number);
    meta.set_next_lease_id(txn.next_lease_id);
    meta.set_format_version(kLedgerFormat);
    batch.Put(kMetaKey, meta.SerializeAsString());
  }
  if (txn.global_step.has_value()) batch.Put(kGlobalStepKey, absl::StrCat(*txn.global_step));
  return batch;
}

void ChunkLedger::Apply(Txn* txn) {
  for (auto& [id, c] : txn->chunks) {
    Unindex(chunks_[id]);
    chunks_[id] = std::move(c);
    Index(chunks_[id]);
  }
  for (auto& [id, p] : txn->peers) peers_[id] = std::move(p);
  for (const std::string& id : txn->forgotten_peers) peers_.erase(id);
  if (txn->meta_changed) {
    next_peer_number_ = txn->next_peer_number;
    next_lease_id_ = txn->next_lease_id;
  }
  if (txn->global_step.has_value()) global_step_ = *txn->global_step;
}

absl::Status ChunkLedger::Commit(Txn* txn, absl::ReleasableMutexLock* lock) {
  if (poisoned_) {
    lock->Release();
    return absl::UnavailableError(
        "the ledger stopped accepting changes after a failed write; restart the coordinator");
  }
  KvBatch batch = BuildBatch(*txn);
  if (batch.empty()) {
    lock->Release();
    return absl::OkStatus();
  }
  Apply(txn);
  auto pending = std::make_shared<PendingWrite>(std::move(batch));
  {
    // Queued while mu_ is held: queue order is the order of the changes.
    absl::MutexLock q(&queue_mu_);
    queue_.push_back(pending);
  }
  lock->Release();
  pending->done.WaitForNotification();
  return pending->status;
}

void ChunkLedger::ExpireInto(Txn* txn) const {
  int64_t now_ms = absl::ToUnixMillis(clock_->Now());
  for (auto it = deadlines_.begin(); it != deadlines_.end() && it->first <= now_ms; ++it) {
    auto [pos, inserted] = txn->chunks.try_emplace(it->second, chunks_[it->second]);
    ClearLease(&pos->second);
  }
}

uint32_t ChunkLedger::ReleaseAllOf(const std::string& peer_id, Txn* txn) const {
  auto it = owned_.find(peer_id);
  if (it == owned_.end()) return 0;
  for (uint64_t id : it->second) {
    auto [pos, inserted] = txn->chunks.try_emplace(id, chunks_[id]);
    ClearLease(&pos->second);
  }
  return it->second.size();
}

absl::Status ChunkLedger::CheckPeerLocked(const PeerHandle& peer) const {
  auto it = peers_.find(peer.peer_id);
  if (it == peers_.end() || !it->second.active()) {
    return absl::NotFoundError(absl::StrCat("peer ", peer.peer_id,
                                            " is not a member of the run (evicted or "
                                            "unknown): Join again"));
  }
  if (it->second.incarnation() != peer.incarnation) {
    return absl::FailedPreconditionError(
        absl::StrCat("peer ", peer.peer_id, " incarnation ", peer.incarnation,
                     " was superseded by incarnation ", it->second.incarnation()));
  }
  return absl::OkStatus();
}

absl::Status ChunkLedger::CheckPeer(const PeerHandle& peer) const {
  absl::ReaderMutexLock lock(&mu_);
  return CheckPeerLocked(peer);
}

absl::StatusOr<JoinOutcome> ChunkLedger::JoinPeer(const std::string& requested_id,
                                                  const PeerInfo& info) {
  absl::ReleasableMutexLock lock(&mu_);
  Txn txn;
  txn.next_peer_number = next_peer_number_;
  txn.next_lease_id = next_lease_id_;
  JoinOutcome outcome;
  PeerRecord record;
  if (requested_id.empty()) {
    static thread_local std::mt19937_64 rng(std::random_device{}());
    record.set_peer_id(absl::StrFormat("peer-%d-%06x", txn.next_peer_number++, rng() & 0xffffff));
    record.set_incarnation(1);
    txn.meta_changed = true;
  } else {
    auto it = peers_.find(requested_id);
    if (it == peers_.end()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "peer id \"", requested_id, "\" was never issued by run ", meta_run_id_,
          " (join without an id to get one)"));
    }
    record.set_peer_id(requested_id);
    record.set_incarnation(it->second.incarnation() + 1);
    outcome.released_chunks += ReleaseAllOf(requested_id, &txn);
  }
  record.set_display_name(info.display_name);
  record.set_listen_address(info.listen_address);
  record.set_public_address(info.public_address);
  record.set_client_only(info.client_only);
  record.set_joined_unix_ms(absl::ToUnixMillis(clock_->Now()));
  record.set_active(true);
  // A live entry at the same address is a previous process that is gone.
  std::string address = EffectiveAddress(record);
  if (!address.empty()) {
    for (const auto& [id, p] : peers_) {
      if (id == record.peer_id() || !p.active() || EffectiveAddress(p) != address) continue;
      PeerRecord& old = txn.peers[id] = p;
      old.set_active(false);
      old.set_left_unix_ms(absl::ToUnixMillis(clock_->Now()));
      outcome.released_chunks += ReleaseAllOf(id, &txn);
      outcome.replaced_peers.push_back(id);
    }
  }
  txn.peers[record.peer_id()] = record;
  outcome.peer = {record.peer_id(), record.incarnation()};
  if (absl::Status s = Commit(&txn, &lock); !s.ok()) return s;
  return outcome;
}

absl::StatusOr<uint32_t> ChunkLedger::RemovePeer(const std::string& peer_id,
                                                 std::optional<uint64_t> incarnation) {
  absl::ReleasableMutexLock lock(&mu_);
  auto it = peers_.find(peer_id);
  if (it == peers_.end() || !it->second.active()) {
    return absl::NotFoundError(absl::StrCat("no active peer ", peer_id));
  }
  if (incarnation.has_value()) {
    if (absl::Status s = CheckPeerLocked({peer_id, *incarnation}); !s.ok()) return s;
  }
  Txn txn;
  PeerRecord& p = txn.peers[peer_id] = it->second;
  p.set_active(false);
  p.set_left_unix_ms(absl::ToUnixMillis(clock_->Now()));
  uint32_t released = ReleaseAllOf(peer_id, &txn);
  if (absl::Status s = Commit(&txn, &lock); !s.ok()) return s;
  return released;
}

std::vector<internal::PeerRecord> ChunkLedger::ActivePeers() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<PeerRecord> out;
  for (const auto& [id, p] : peers_) {
    if (p.active()) out.push_back(p);
  }
  return out;
}

absl::StatusOr<std::vector<LeaseInfo>> ChunkLedger::Acquire(const PeerHandle& peer,
                                                            uint32_t max_chunks,
                                                            absl::Duration timeout) {
  absl::ReleasableMutexLock lock(&mu_);
  if (absl::Status s = CheckPeerLocked(peer); !s.ok()) return s;
  Txn txn;
  ExpireInto(&txn);
  txn.next_peer_number = next_peer_number_;
  txn.next_lease_id = next_lease_id_;
  txn.meta_changed = true;
  // Candidates in leasing order: the unleased set, plus chunks whose lease
  // expires in this very transaction.
  std::set<std::pair<uint64_t, uint64_t>> candidates;
  for (const auto& [id, c] : txn.chunks) candidates.insert({c.times_trained(), id});
  absl::Time deadline = clock_->Now() + timeout;
  std::vector<LeaseInfo> leases;
  auto unleased = unleased_.begin();
  auto expired = candidates.begin();
  while (leases.size() < max_chunks &&
         (unleased != unleased_.end() || expired != candidates.end())) {
    std::pair<uint64_t, uint64_t> next;
    if (expired == candidates.end() || (unleased != unleased_.end() && *unleased < *expired)) {
      next = *unleased++;
    } else {
      next = *expired++;
    }
    auto [pos, inserted] = txn.chunks.try_emplace(next.second, chunks_[next.second]);
    ChunkRecord& c = pos->second;
    c.set_lease_id(txn.next_lease_id++);
    c.set_owner_peer_id(peer.peer_id);
    c.set_owner_incarnation(peer.incarnation);
    c.set_deadline_unix_ms(absl::ToUnixMillis(deadline));
    leases.push_back({c.chunk_id(), c.lease_id(), absl::FromUnixMillis(c.deadline_unix_ms()),
                      c.times_trained(), c.num_samples()});
  }
  if (absl::Status s = Commit(&txn, &lock); !s.ok()) return s;
  return leases;
}

absl::StatusOr<RenewResult> ChunkLedger::Renew(const PeerHandle& peer,
                                               const std::vector<uint64_t>& lease_ids,
                                               absl::Duration timeout) {
  absl::ReleasableMutexLock lock(&mu_);
  if (absl::Status s = CheckPeerLocked(peer); !s.ok()) return s;
  Txn txn;
  ExpireInto(&txn);
  int64_t deadline = absl::ToUnixMillis(clock_->Now() + timeout);
  RenewResult result;
  for (uint64_t lease : lease_ids) {
    auto it = lease_to_chunk_.find(lease);
    bool held = false;
    if (it != lease_to_chunk_.end()) {
      auto [pos, inserted] = txn.chunks.try_emplace(it->second, chunks_[it->second]);
      ChunkRecord& c = pos->second;
      held = c.lease_id() == lease && c.owner_peer_id() == peer.peer_id &&
             c.owner_incarnation() == peer.incarnation;
      if (held) {
        c.set_deadline_unix_ms(deadline);
        result.renewed.push_back({c.chunk_id(), lease, absl::FromUnixMillis(deadline),
                                  c.times_trained(), c.num_samples()});
      }
    }
    if (!held) result.lost.push_back(lease);
  }
  if (absl::Status s = Commit(&txn, &lock); !s.ok()) return s;
  return result;
}

absl::StatusOr<CompleteResult> ChunkLedger::Complete(const PeerHandle& peer, uint64_t chunk_id,
                                                     uint64_t lease_id,
                                                     uint32_t samples_trained) {
  absl::ReleasableMutexLock lock(&mu_);
  if (chunk_id >= chunks_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("no chunk ", chunk_id));
  }
  if (absl::Status s = CheckPeerLocked(peer); !s.ok()) return s;
  if (samples_trained > chunks_[chunk_id].num_samples()) {
    return absl::InvalidArgumentError(absl::StrCat("samples_trained ", samples_trained,
                                                   " exceeds the ", chunks_[chunk_id].num_samples(),
                                                   " samples of chunk ", chunk_id));
  }
  Txn txn;
  ExpireInto(&txn);
  auto [pos, inserted] = txn.chunks.try_emplace(chunk_id, chunks_[chunk_id]);
  ChunkRecord& c = pos->second;
  CompleteResult result;
  if (lease_id != 0 && c.last_completed_lease_id() == lease_id) {
    result.duplicate = true;
    result.times_trained = c.times_trained();
    return result;  // nothing to write; the expiries can wait for the next call
  }
  if (lease_id == 0 || c.lease_id() != lease_id || c.owner_peer_id() != peer.peer_id ||
      c.owner_incarnation() != peer.incarnation) {
    return absl::FailedPreconditionError(absl::StrCat(
        "peer ", peer.peer_id, " does not hold lease ", lease_id, " on chunk ", chunk_id,
        " (expired, released or never its own); nothing was counted"));
  }
  ClearLease(&c);
  c.set_last_completed_lease_id(lease_id);
  if (samples_trained == 0) {
    // Nothing was trained: the chunk goes back to the pool for another
    // peer, unless peers keep failing on it.
    c.set_failed_completions(c.failed_completions() + 1);
    if (c.failed_completions() < kFailuresBeforeBad) {
      result.returned_untrained = true;
      result.times_trained = c.times_trained();
      if (absl::Status s = Commit(&txn, &lock); !s.ok()) return s;
      return result;
    }
    c.set_bad(true);
    result.marked_bad = true;
  } else {
    c.set_failed_completions(0);
  }
  c.set_times_trained(c.times_trained() + 1);
  c.set_samples_trained(c.samples_trained() + samples_trained);
  result.times_trained = c.times_trained();
  if (absl::Status s = Commit(&txn, &lock); !s.ok()) return s;
  return result;
}

absl::StatusOr<uint32_t> ChunkLedger::Release(const PeerHandle& peer,
                                              const std::vector<uint64_t>& lease_ids) {
  absl::ReleasableMutexLock lock(&mu_);
  if (absl::Status s = CheckPeerLocked(peer); !s.ok()) return s;
  Txn txn;
  for (uint64_t lease : lease_ids) {
    auto it = lease_to_chunk_.find(lease);
    if (it == lease_to_chunk_.end() || chunks_[it->second].owner_peer_id() != peer.peer_id ||
        chunks_[it->second].owner_incarnation() != peer.incarnation) {
      return absl::FailedPreconditionError(
          absl::StrCat("peer ", peer.peer_id, " does not hold lease ", lease));
    }
    auto [pos, inserted] = txn.chunks.try_emplace(it->second, chunks_[it->second]);
    ClearLease(&pos->second);
  }
  uint32_t released = txn.chunks.size();
  if (absl::Status s = Commit(&txn, &lock); !s.ok()) return s;
  return released;
}

absl::StatusOr<bool> ChunkLedger::AdminRelease(uint64_t chunk_id) {
  absl::ReleasableMutexLock lock(&mu_);
  if (chunk_id >= chunks_.size()) return absl::NotFoundError(absl::StrCat("no chunk ", chunk_id));
  if (chunks_[chunk_id].lease_id() == 0) return false;
  Txn txn;
  ClearLease(&(txn.chunks[chunk_id] = chunks_[chunk_id]));
  if (absl::Status s = Commit(&txn, &lock); !s.ok()) return s;
  return true;
}

absl::StatusOr<uint32_t> ChunkLedger::ExpireDue() {
  absl::ReleasableMutexLock lock(&mu_);
  Txn txn;
  ExpireInto(&txn);
  uint32_t n = txn.chunks.size();
  if (absl::Status s = Commit(&txn, &lock); !s.ok()) return s;
  return n;
}

uint64_t ChunkLedger::GlobalStep() const {
  absl::ReaderMutexLock lock(&mu_);
  return global_step_;
}

absl::Status ChunkLedger::SetGlobalStep(uint64_t step) {
  absl::ReleasableMutexLock lock(&mu_);
  if (step < global_step_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the global step is ", global_step_, "; it does not go back to ", step));
  }
  Txn txn;
  if (step != global_step_) txn.global_step = step;
  return Commit(&txn, &lock);
}

LedgerStats ChunkLedger::Stats() const {
  absl::ReaderMutexLock lock(&mu_);
  LedgerStats stats;
  stats.num_chunks = chunks_.size();
  stats.epoch = by_times_.empty() ? 0 : by_times_.begin()->first;
  stats.leased = deadlines_.size();
  for (auto it = unleased_.begin(); it != unleased_.end() && it->first == stats.epoch; ++it) {
    stats.pending++;
  }
  for (const auto& [times, count] : by_times_) {
    if (times > stats.epoch) stats.done += count;
  }
  stats.samples_done = samples_done_;
  stats.completions = completions_;
  return stats;
}

std::vector<internal::ChunkRecord> ChunkLedger::ListChunks(uint64_t start, size_t limit,
                                                           const ChunkFilter& filter,
                                                           std::optional<uint64_t>* next) const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<ChunkRecord> out;
  *next = std::nullopt;
  for (uint64_t id = start; id < chunks_.size(); ++id) {
    const ChunkRecord& c = chunks_[id];
    bool leased = c.lease_id() != 0;
    if (filter.state == ChunkFilter::State::kPending && leased) continue;
    if (filter.state == ChunkFilter::State::kLeased && !leased) continue;
    if (!filter.owner_peer_id.empty() && c.owner_peer_id() != filter.owner_peer_id) continue;
    if (out.size() == limit) {
      *next = id;
      break;
    }
    out.push_back(c);
  }
  return out;
}

absl::StatusOr<uint32_t> ChunkLedger::ForgetInactivePeers(absl::Time left_before) {
  absl::ReleasableMutexLock lock(&mu_);
  Txn txn;
  const int64_t cutoff = absl::ToUnixMillis(left_before);
  for (const auto& [id, p] : peers_) {
    // Records from before left_unix_ms existed (0) are kept.
    if (!p.active() && p.left_unix_ms() != 0 && p.left_unix_ms() < cutoff &&
        owned_.count(id) == 0) {
      txn.forgotten_peers.push_back(id);
    }
  }
  const uint32_t forgotten = txn.forgotten_peers.size();
  if (absl::Status s = Commit(&txn, &lock); !s.ok()) return s;
  return forgotten;
}

uint32_t ChunkLedger::LeasesHeldBy(const std::string& peer_id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = owned_.find(peer_id);
  return it == owned_.end() ? 0 : it->second.size();
}

uint64_t ChunkLedger::SamplesLeasedBy(const std::string& peer_id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = owned_.find(peer_id);
  if (it == owned_.end()) return 0;
  uint64_t samples = 0;
  for (uint64_t chunk : it->second) samples += chunks_[chunk].num_samples();
  return samples;
}

}  // namespace dd::coordinator
