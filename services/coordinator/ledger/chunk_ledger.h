// ChunkLedger: the coordinator's durable state: every chunk's training count
// and current lease, and every peer's identity (id, incarnation, addresses).
//
// Written once against KvStore, so the RocksDB and in-memory backends behave
// identically (chunk_ledger_conformance_test.cc runs both). Every operation
// that changes state is one atomic KvStore batch, written (and, for RocksDB,
// fsynced) before the call returns: after kill -9 and a restart no
// acknowledged lease or completion is lost and nothing counts twice.
//
// In memory the ledger keeps indexes rebuilt at open: unleased chunks ordered
// by (times trained, id) for least-trained-first leasing, and leases ordered
// by deadline, so expiry touches only the leases that are due.
//
// Thread-safe. One mutex orders operations; each applies its change in
// memory, queues its batch and releases the mutex; a committer thread writes
// everything queued so far as one synced batch (group commit) and only then
// are the callers answered. Batches reach the store in the order their
// changes were made, so the store always holds a prefix of the history. If a
// write fails the ledger stops accepting changes (UNAVAILABLE): memory is
// ahead of the store, and a restart recovers the last durable state.
//
// What readers see: the in-memory state, which may include changes whose
// batch is still being synced (at most one group commit, milliseconds).
// Nothing acts on such a change durably before it is durable itself: a
// change that depends on it (another peer leasing a chunk just released)
// is a later batch of the same ordered queue, so it is durable only if the
// earlier one is, and if the earlier one fails every later one fails too.
// Read-only calls (Stats, ListChunks) may show such a change to a person a
// moment early; no caller is answered OK for anything not durable.
#ifndef SERVICES_COORDINATOR_LEDGER_CHUNK_LEDGER_H_
#define SERVICES_COORDINATOR_LEDGER_CHUNK_LEDGER_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/time/clock.h"
#include "services/coordinator/ledger/kv_store.h"
#include "services/coordinator/ledger/ledger_records.pb.h"

namespace dd::coordinator {

namespace internal = ::distdiff::coordinator::internal;

// What the ledger is for: checked at every open.
struct LedgerIdentity {
  std::string run_id;
  std::string manifest_sha256;         // the dataset's content hash
  std::vector<uint32_t> chunk_samples;  // samples per chunk, by chunk id
};

struct PeerInfo {
  std::string display_name;
  std::string listen_address;
  std::string public_address;  // empty: same as listen_address
  bool client_only = false;
};

struct PeerHandle {
  std::string peer_id;
  uint64_t incarnation = 0;
};

struct JoinOutcome {
  PeerHandle peer;
  // Other peers evicted because they were registered at the same public
  // address (a restarted process that lost its id).
  std::vector<std::string> replaced_peers;
  uint32_t released_chunks = 0;  // leases of replaced incarnations/peers
};

struct LeaseInfo {
  uint64_t chunk_id = 0;
  uint64_t lease_id = 0;
  absl::Time deadline;
  uint64_t epoch = 0;  // times trained when leased
  uint32_t num_samples = 0;
};

struct RenewResult {
  std::vector<LeaseInfo> renewed;
  std::vector<uint64_t> lost;
};

struct CompleteResult {
  bool duplicate = false;
  uint64_t times_trained = 0;
  // A completion with 0 samples: the chunk went back to the pool untrained.
  bool returned_untrained = false;
  // This completion made the chunk bad (see kFailuresBeforeBad).
  bool marked_bad = false;
};

// Completions with 0 samples (peers that could not read the chunk) before a
// chunk is given up on: counted as trained with no samples and marked bad.
inline constexpr uint32_t kFailuresBeforeBad = 3;

struct LedgerStats {
  uint64_t epoch = 0;
  uint64_t num_chunks = 0;
  uint64_t pending = 0;  // unleased, still to train this epoch
  uint64_t leased = 0;
  uint64_t done = 0;     // trained more often than `epoch`
  uint64_t samples_done = 0;
  uint64_t completions = 0;
};

struct ChunkFilter {
  enum class State { kAny, kPending, kLeased };
  State state = State::kAny;
  std::string owner_peer_id;  // empty: any
};

class ChunkLedger {
 public:
  // Opens the ledger in `store`, creating it from `identity` when the store
  // is empty. FailedPrecondition when the store holds another run (run_id) or
  // a ledger made for another dataset (manifest hash or chunk count differ),
  // naming both values. `clock` must outlive the ledger.
  static absl::StatusOr<std::unique_ptr<ChunkLedger>> Open(std::unique_ptr<KvStore> store,
                                                           const LedgerIdentity& identity,
                                                           Clock* clock);

  // --- Peers ---------------------------------------------------------------

  // Registers a peer. Empty `requested_id`: a new id. A known id: a new
  // incarnation, releasing the old one's leases. Other active peers at the
  // same public address are evicted (their leases released). One batch.
  // FailedPrecondition when `requested_id` was never issued by this run.
  absl::StatusOr<JoinOutcome> JoinPeer(const std::string& requested_id, const PeerInfo& info);

  // Deletes the records of peers that became inactive before `left_before`
  // (each Join without an id adds a record; without this they would pile
  // up forever). Their ids can no longer be rejoined: such a peer joins
  // anew. Returns how many were forgotten.
  absl::StatusOr<uint32_t> ForgetInactivePeers(absl::Time left_before);

  // Deactivates a peer and releases its leases (eviction or a clean leave).
  // With `incarnation`, only if it is the current one. NotFound for an
  // unknown or inactive peer; FailedPrecondition for a stale incarnation.
  absl::StatusOr<uint32_t> RemovePeer(const std::string& peer_id,
                                      std::optional<uint64_t> incarnation = std::nullopt);

  // OK when `peer` is active and its incarnation current; NotFound (unknown
  // or evicted: join again) or FailedPrecondition (superseded) otherwise.
  absl::Status CheckPeer(const PeerHandle& peer) const;

  // Active peers.
  std::vector<internal::PeerRecord> ActivePeers() const;

  // --- Chunks --------------------------------------------------------------

  // Leases up to `max_chunks` unleased chunks, least trained first (ties by
  // chunk id), each until now + `timeout`. Expired leases are reclaimed first.
  absl::StatusOr<std::vector<LeaseInfo>> Acquire(const PeerHandle& peer, uint32_t max_chunks,
                                                 absl::Duration timeout);

  // Extends the leases the peer still holds to now + `timeout`.
  absl::StatusOr<RenewResult> Renew(const PeerHandle& peer, const std::vector<uint64_t>& lease_ids,
                                    absl::Duration timeout);

  // Records a completion of the lease `lease_id` on `chunk_id`. A repeat of
  // the chunk's last recorded completion by the same peer is OK and marked
  // duplicate. A completion with 0 samples trained does not count: the
  // chunk returns to the pool (returned_untrained), until the
  // kFailuresBeforeBad-th such completion marks it bad and counts it. FailedPrecondition when the peer does not hold the lease;
  // InvalidArgument for an unknown chunk or samples above the chunk's count.
  absl::StatusOr<CompleteResult> Complete(const PeerHandle& peer, uint64_t chunk_id,
                                          uint64_t lease_id, uint32_t samples_trained);

  // Returns the peer's leases untrained. FailedPrecondition if any is not
  // held (none is released then).
  absl::StatusOr<uint32_t> Release(const PeerHandle& peer, const std::vector<uint64_t>& lease_ids);

  // Administrative release of a chunk's lease, whoever holds it. Returns
  // whether it was leased. NotFound for an unknown chunk.
  absl::StatusOr<bool> AdminRelease(uint64_t chunk_id);

  // Releases every lease whose deadline has passed; returns how many.
  absl::StatusOr<uint32_t> ExpireDue();

  // --- Global step ---------------------------------------------------------

  // The collaboration's global step (0 for a new run), so a restarted
  // coordinator continues the step count.
  uint64_t GlobalStep() const;
  // Advances the global step, as a transaction of the ledger like any other
  // (group-committed in order, durable when OK; a failed write stops the
  // ledger). FailedPrecondition when `step` is below the current one: the
  // step never goes back.
  absl::Status SetGlobalStep(uint64_t step);

  // --- Queries -------------------------------------------------------------

  LedgerStats Stats() const;
  // False once a write failed: the ledger then refuses every change until
  // it is reopened (the coordinator's health turns NOT_SERVING, so its
  // supervisor restarts it).
  bool AcceptsChanges() const { return !poisoned_; }
  const std::string& run_id() const { return meta_run_id_; }
  const std::string& manifest_sha256() const { return meta_manifest_; }

  // Up to `limit` chunks with id >= `start` matching `filter`, in id order;
  // `next` is set to where the next page starts (or nullopt at the end).
  std::vector<internal::ChunkRecord> ListChunks(uint64_t start, size_t limit,
                                                const ChunkFilter& filter,
                                                std::optional<uint64_t>* next) const;

  // Number of leases `peer_id` holds.
  uint32_t LeasesHeldBy(const std::string& peer_id) const;
  // Samples in the chunks `peer_id` holds leases on.
  uint64_t SamplesLeasedBy(const std::string& peer_id) const;

 private:
  // The records an operation changes, staged as copies. Commit() writes them
  // in one batch and only then applies them to the in-memory state, so a
  // failed write leaves memory and store as they were.
  struct Txn;

  struct PendingWrite;

  ChunkLedger(std::unique_ptr<KvStore> store, Clock* clock);
 public:
  ~ChunkLedger();
 private:

  absl::Status Load(const LedgerIdentity& identity);
  absl::Status CheckPeerLocked(const PeerHandle& peer) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Stages releasing every lease of `peer_id`; returns how many.
  uint32_t ReleaseAllOf(const std::string& peer_id, Txn* txn) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Stages releasing every lease that is due.
  void ExpireInto(Txn* txn) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Applies `txn` in memory, queues its batch, releases `lock` and waits for
  // the group commit. The caller must not touch guarded state afterwards.
  absl::Status Commit(Txn* txn, absl::ReleasableMutexLock* lock)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  KvBatch BuildBatch(const Txn& txn) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void Apply(Txn* txn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CommitLoop();
  void Index(const internal::ChunkRecord& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Unindex(const internal::ChunkRecord& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Fixed after construction.
  const std::unique_ptr<KvStore> store_;
  Clock* const clock_;
  std::string meta_run_id_;
  std::string meta_manifest_;

  std::thread committer_;
  std::atomic<bool> poisoned_{false};

  absl::Mutex queue_mu_ ABSL_ACQUIRED_AFTER(mu_);
  std::vector<std::shared_ptr<PendingWrite>> queue_ ABSL_GUARDED_BY(queue_mu_);
  bool stopping_ ABSL_GUARDED_BY(queue_mu_) = false;

  mutable absl::Mutex mu_;
  uint64_t next_peer_number_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_lease_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t global_step_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<internal::ChunkRecord> chunks_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, internal::PeerRecord> peers_ ABSL_GUARDED_BY(mu_);
  // Unleased chunks by (times_trained, chunk_id): the leasing order.
  std::set<std::pair<uint64_t, uint64_t>> unleased_ ABSL_GUARDED_BY(mu_);
  // Leases by (deadline ms, chunk_id): the expiry order.
  std::set<std::pair<int64_t, uint64_t>> deadlines_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, uint64_t> lease_to_chunk_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::set<uint64_t>> owned_ ABSL_GUARDED_BY(mu_);
  // Chunk count per times_trained (the smallest key is the epoch).
  std::map<uint64_t, uint64_t> by_times_ ABSL_GUARDED_BY(mu_);
  uint64_t samples_done_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t completions_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace dd::coordinator

#endif  // SERVICES_COORDINATOR_LEDGER_CHUNK_LEDGER_H_
