// libFuzzer target for the coordinator's request handling: a CoordinatorCore
// over an in-memory ledger (6 chunks of 8 samples), a fake clock, a prober
// that answers at once, a round planner that audits and a real credential
// issuer takes a sequence of calls from the input, as the service adapter
// would pass them: any RPC, any request bytes, from the run token, an
// invitation, an unknown peer or one of the peers that joined so far.
// Input: records of [op byte][caller byte][2-byte length][request bytes]
// (op 0xff advances the clock by `length` seconds and ticks). The ledger's
// lease ids cannot be guessed, so a lease id below 16 in a request names
// the n-th lease handed out so far (and a chunk id of 0, that lease's
// chunk). Checked:
// nothing crashes or throws, and after every call the run state holds:
// leased and pending chunks within the run's, no more samples done than the
// completions' chunks hold, and no more live peers than joins.
// tools/fuzz/run_fuzzers.sh builds it with clang; coordinator_core_fuzz_test
// runs it under Bazel on generated input.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <glog/logging.h>
#include <google/protobuf/stubs/logging.h>

#include "common/crypto/peer_credential.h"
#include "common/testing/fuzz_scripts.h"
#include "common/rpc/caller.h"
#include "common/time/clock.h"
#include "services/coordinator/coordinator_core.h"
#include "services/coordinator/ledger/chunk_ledger.h"
#include "services/coordinator/ledger/kv_store.h"
#include "services/coordinator/registry/health_prober.h"
#include "services/coordinator/registry/peer_liveness.h"
#include "services/coordinator/rounds/round_planner.h"

namespace {

using namespace dd;               // NOLINT: a fuzz target
using namespace dd::coordinator;  // NOLINT

constexpr char kAdmin[] = "admin-secret-0123456789";
constexpr uint64_t kChunkSamples = 8;

// Serving when the address's length is even: some peers reachable, some not.
class ParityProber : public HealthProber {
 public:
  void Probe(const std::string& address, std::function<void(bool)> done) override {
    done(address.size() % 2 == 0);
  }
};

const CredentialIssuer& Issuer() {
  static const CredentialIssuer* issuer = CredentialIssuer::Generate()->release();
  return *issuer;
}

void Check(bool ok, const char* what) {
  if (!ok) {
    fprintf(stderr, "coordinator_core_fuzz: invariant broken: %s\n", what);
    abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Request bytes that are not valid UTF-8 in a string field do not parse;
  // protobuf would log each one.
  static const bool quiet = [] {
    google::protobuf::SetLogHandler(nullptr);
    FLAGS_minloglevel = google::GLOG_FATAL;  // the core logs every join and round
    return true;
  }();
  (void)quiet;
  FakeClock clock;
  ParityProber prober;
  auto ledger = ChunkLedger::Open(NewInMemoryKvStore(), {"run", "m", {8, 8, 8, 8, 8, 8}}, &clock);
  if (!ledger.ok()) abort();
  LivenessOptions lo;
  lo.ttl = absl::Seconds(30);
  PeerLiveness liveness(ledger->get(), &prober, &clock, lo);
  RoundPlannerOptions ro;
  ro.target_batch_size = 16;
  ro.reducer_audits = 1;
  RoundPlanner rounds(ro, &clock);
  CoordinatorOptions options;
  options.admin_token = kAdmin;
  options.heartbeat_ttl = absl::Seconds(30);
  CoordinatorCore core(ledger->get(), &liveness, &rounds,
                       RunConfig{"run", "{\"run_id\":\"run\",\"open_run\":true}"}, options, &clock,
                       &Issuer());
  std::vector<v1::PeerRef> joined;
  std::vector<v1::Lease> leases;
  // A lease id below 16 names a lease handed out before.
  auto known = [&leases](uint64_t* lease_id, uint64_t* chunk_id) {
    if (*lease_id >= 16 || leases.empty()) return;
    const v1::Lease& l = leases[*lease_id % leases.size()];
    *lease_id = l.lease_id();
    if (chunk_id != nullptr && *chunk_id == 0) *chunk_id = l.chunk_id();
  };
  ::dd::testing::FuzzRecordReader input(data, size);
  ::dd::testing::FuzzRecordReader::Record call;
  for (int calls = 0; calls < 64 && input.Next(&call); ++calls) {
    const uint8_t op = call.op, who = call.who;
    if (op == 0xff) {
      clock.Advance(absl::Seconds(static_cast<int64_t>(call.length % 4000)));
      core.Tick();
      continue;
    }
    Caller caller = Caller::RunToken();
    if (who == 1) caller = Caller::Invitation("guest");
    if (who == 2) caller = Caller::Peer("peer-9-abcdef", 1);
    if (who >= 3 && !joined.empty()) {
      const v1::PeerRef& p = joined[(who - 3) % joined.size()];
      caller = Caller::Peer(p.peer_id(), p.incarnation());
    }
    const std::string admin = (who & 0x80) ? kAdmin : "";
    switch (op % 18) {
      case 0: {
        v1::JoinRequest r;
        if (!call.Parse(&r)) break;
        auto j = core.Join(r, caller);
        if (j.ok()) {
          v1::PeerRef ref;
          ref.set_peer_id(j->peer_id());
          ref.set_incarnation(j->incarnation());
          joined.push_back(ref);
        }
        break;
      }
      case 1: { v1::HeartbeatRequest r; if (call.Parse(&r)) (void)core.Heartbeat(r, caller); break; }
      case 2: { v1::LeaveRequest r; if (call.Parse(&r)) (void)core.Leave(r, caller); break; }
      case 3: {
        v1::AcquireChunksRequest r;
        if (!call.Parse(&r)) break;
        auto a = core.AcquireChunks(r, caller);
        if (a.ok()) leases.insert(leases.end(), a->leases().begin(), a->leases().end());
        break;
      }
      case 4: {
        v1::RenewLeasesRequest r;
        if (!call.Parse(&r)) break;
        for (auto& id : *r.mutable_lease_ids()) known(&id, nullptr);
        (void)core.RenewLeases(r, caller);
        break;
      }
      case 5: {
        v1::CompleteChunkRequest r;
        if (!call.Parse(&r)) break;
        uint64_t lease = r.lease_id(), chunk = r.chunk_id();
        known(&lease, &chunk);
        r.set_lease_id(lease);
        r.set_chunk_id(chunk);
        (void)core.CompleteChunk(r, caller);
        break;
      }
      case 6: {
        v1::ReleaseChunksRequest r;
        if (!call.Parse(&r)) break;
        for (auto& id : *r.mutable_lease_ids()) known(&id, nullptr);
        (void)core.ReleaseChunks(r, caller);
        break;
      }
      case 7: { v1::ListChunksRequest r; if (call.Parse(&r)) (void)core.ListChunks(r, caller, admin); break; }
      case 8: { v1::ListPeersRequest r; if (call.Parse(&r)) (void)core.ListPeers(r, caller, admin); break; }
      case 9: { v1::ReportProgressRequest r; if (call.Parse(&r)) (void)core.ReportProgress(r, caller); break; }
      case 10: { v1::GetRoundRequest r; if (call.Parse(&r)) (void)core.GetRound(r, caller); break; }
      case 11: { v1::ListRoundsRequest r; if (call.Parse(&r)) (void)core.ListRounds(r); break; }
      case 12: { v1::GetStepHashRequest r; if (call.Parse(&r)) (void)core.GetStepHash(r); break; }
      case 13: { v1::ReportAuditsRequest r; if (call.Parse(&r)) (void)core.ReportAudits(r, caller); break; }
      case 14: { v1::AdminReleaseChunkRequest r; if (call.Parse(&r)) (void)core.AdminReleaseChunk(r, admin); break; }
      case 15: { v1::AdminEvictPeerRequest r; if (call.Parse(&r)) (void)core.AdminEvictPeer(r, admin); break; }
      case 16: { v1::AdminInviteRequest r; if (call.Parse(&r)) (void)core.AdminInvite(r, admin); break; }
      case 17: { v1::UploadSampleRequest r; if (call.Parse(&r)) (void)core.UploadSample(r, caller); break; }
    }
    auto state = core.GetRunState({});
    Check(state.ok(), "GetRunState fails");
    Check(state->num_chunks() == 6, "the run's chunk count changed");
    Check(state->chunks_leased() <= 6 && state->chunks_pending() <= 6, "more chunks than the run's");
    Check(state->chunks_leased() + state->chunks_pending() <= 6, "a chunk both leased and pending");
    Check(state->samples_done() <= state->completions() * kChunkSamples,
          "more samples done than the completed chunks hold");
    Check(state->live_peers() <= joined.size(), "more live peers than joins");
  }
  return 0;
}
