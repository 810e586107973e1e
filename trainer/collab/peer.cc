#include "trainer/collab/peer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include <glog/logging.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/crypto/sha256.h"
#include "common/image/image_codec.h"
#include "common/image/image_decoder.h"
#include "common/io/file_util.h"
#include "common/rpc/auth.h"
#include "common/rpc/channel.h"
#include "common/rpc/server.h"
#include "common/status/status_macros.h"
#include "services/dataset/dataset_client.h"
#include "trainer/averaging/butterfly.h"
#include "trainer/collab/chunk_stream.h"
#include "trainer/collab/coordinator_client.h"
#include "trainer/collab/peer_session.h"
#include "trainer/collab/state_service.h"
#include "trainer/collab/sync_config.h"
#include "trainer/collab/tampered_state.h"
#include "trainer/data/data_loader.h"
#include "trainer/data/sample_source.h"
#include "trainer/model/model_source.h"

namespace dd::collab {
namespace {

// Sends heartbeats until stopped.
class Heartbeats {
 public:
  Heartbeats(CoordinatorClient* client, absl::Duration interval)
      : thread_([this, client, interval] {
          while (!stop_.load()) {
            absl::Status s = client->Heartbeat(rate_.load());
            if (!s.ok()) LOG(WARNING) << "heartbeat: " << s;
            for (absl::Time until = absl::Now() + interval; !stop_.load() && absl::Now() < until;) {
              std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
          }
        }) {}
  ~Heartbeats() {
    stop_ = true;
    thread_.join();
  }
  void SetRate(double r) { rate_ = r; }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<double> rate_{0};
  std::thread thread_;
};


// The coordinator over gRPC, with heartbeats carrying the training rate.
class GrpcCoordinatorLink final : public CoordinatorLink {
 public:
  GrpcCoordinatorLink(CoordinatorClient* client, absl::Duration heartbeat_interval)
      : client_(client), heartbeats_(client, heartbeat_interval) {}
  std::string peer_id() const override { return client_->peer_id(); }
  absl::StatusOr<cv1::ReportProgressResponse> Report(
      const cv1::ReportProgressRequest& request) override {
    return client_->Report(request);
  }
  absl::StatusOr<std::optional<cv1::Round>> GetRound(uint64_t after_round_id) override {
    return client_->GetRound(after_round_id);
  }
  absl::StatusOr<uint64_t> GlobalStep() override {
    ASSIGN_OR_RETURN(cv1::RunState state, client_->GetRunState());
    return state.global_step();
  }
  absl::StatusOr<cv1::GetStepHashResponse> StepHash(uint64_t step) override {
    return client_->GetStepHash(step);
  }
  absl::StatusOr<size_t> PeersBehind(uint64_t step) override {
    ASSIGN_OR_RETURN(std::vector<cv1::PeerEntry> peers, client_->ListPeers());
    const std::string self = client_->peer_id();
    return static_cast<size_t>(std::count_if(peers.begin(), peers.end(), [&](const auto& p) {
      return p.peer_id() != self && p.global_step() < step;
    }));
  }
  void SetSamplesPerSecond(double rate) override { heartbeats_.SetRate(rate); }
  absl::Status CheckMembership() override { return client_->Heartbeat(0); }
  absl::StatusOr<bool> UploadSampleGrid(uint64_t step, const std::string& path) override {
    ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
    ASSIGN_OR_RETURN(RgbImage grid, DecodeImage(bytes));
    ASSIGN_OR_RETURN(std::string png, EncodePng(ShrinkToFit(grid, 1024)));
    return client_->UploadSample(step, std::move(png));
  }

 private:
  CoordinatorClient* const client_;
  Heartbeats heartbeats_;
};

// Batches from the chunks this peer leases, one loader per chunk; a chunk
// is completed with the samples trained of it when its loader ends, and
// the one being trained when the peer stops with what was trained so far.
class ChunkBatches final : public BatchSource {
 public:
  ChunkBatches(ChunkStream* stream, data::LoaderOptions options, uint64_t seed)
      : stream_(stream), options_(std::move(options)), seed_(seed) {}
  ~ChunkBatches() override { Close(); }

  absl::StatusOr<data::Batch> Next() override {
    while (true) {
      if (!loader_) {
        ASSIGN_OR_RETURN(chunk_, stream_->Next(absl::Minutes(5)));
        chunk_samples_ = 0;
        auto listing = data::ListSamples(chunk_.path);
        if (!listing.ok()) {
          LOG(WARNING) << "chunk " << chunk_.chunk_id << " cannot be read (" << listing.status()
                       << "); reported with 0 samples and skipped";
          (void)stream_->Complete(chunk_, 0);
          continue;
        }
        data::LoaderOptions lo = options_;
        lo.max_epochs = 1;
        lo.seed = seed_ ^ (chunk_.chunk_id * 0x9E3779B97F4A7C15ull);
        ASSIGN_OR_RETURN(loader_, data::DataLoader::Start(listing->samples, lo));
      }
      auto batch = loader_->Next();
      if (batch.ok() && batch->has_value()) {
        chunk_samples_ += (*batch)->pixels.size(0);
        return std::move(**batch);
      }
      if (!batch.ok()) LOG(WARNING) << "chunk " << chunk_.chunk_id << ": " << batch.status();
      absl::Status done = stream_->Complete(chunk_, static_cast<uint32_t>(chunk_samples_));
      if (!done.ok()) LOG(WARNING) << "completing chunk " << chunk_.chunk_id << ": " << done;
      loader_.reset();
    }
  }

  void Close() {
    if (loader_ && chunk_samples_ > 0) {
      absl::Status done = stream_->Complete(chunk_, static_cast<uint32_t>(chunk_samples_));
      if (!done.ok()) LOG(WARNING) << "completing chunk " << chunk_.chunk_id << ": " << done;
    }
    loader_.reset();
  }

 private:
  ChunkStream* const stream_;
  const data::LoaderOptions options_;
  const uint64_t seed_;
  std::unique_ptr<data::DataLoader> loader_;
  LocalChunk chunk_;
  int64_t chunk_samples_ = 0;
};

// The butterfly all-reduce over the round's members.
class ButterflyRoundAverager final : public RoundAverager {
 public:
  // `max_update_norm` (> 0) bounds the L2 norm of what this peer sends.
  // Audit verdicts go to `coordinator`. `poison_for_test`:
  // PeerOptions::poison_contributions_for_test.
  ButterflyRoundAverager(averaging::AveragerService* service, const SecurityConfig& security,
                         const std::string& self, averaging::AllReduceOptions options,
                         double max_update_norm, CoordinatorClient* coordinator,
                         double poison_for_test)
      : allreduce_(service, security),
        self_(self),
        options_(options),
        max_update_norm_(max_update_norm),
        coordinator_(coordinator),
        poison_for_test_(poison_for_test) {}

  absl::StatusOr<averaging::AllReduceResult> Average(const cv1::Round& r,
                                                     std::vector<float>* values, double weight,
                                                     averaging::CodecErrors errors) override {
    averaging::RoundSpec spec;
    spec.round_id = r.round_id();
    std::vector<double> shares;
    for (int i = 0; i < r.members_size(); ++i) {
      spec.peer_ids.push_back(r.members(i).peer_id());
      spec.addresses.push_back(r.members(i).address());
      shares.push_back(r.members(i).span_share());
      spec.weights.push_back(static_cast<double>(r.members(i).samples()));
      if (r.members(i).peer_id() == self_) spec.my_index = i;
    }
    spec.span_starts = averaging::SplitSpans(values->size(), r.members_size(), shares);
    for (const cv1::RoundAudit& a : r.audits()) {
      spec.audits.push_back({a.span(), a.part_seed(), a.auditor()});
    }
    averaging::AllReduceOptions o = options_;
    o.audited = r.audited();
    o.deadline = absl::FromUnixMillis(r.deadline_unix_ms());
    // A round that used more than half of the time it was given says where
    // the time went.
    o.slow_round = std::max(absl::ZeroDuration(), (o.deadline - absl::Now()) / 2);
    if (max_update_norm_ > 0) {
      const double norm = averaging::ClipToL2Norm(values->data(), values->size(), max_update_norm_);
      if (norm > max_update_norm_) {
        LOG(INFO) << "round " << r.round_id() << ": contribution of norm " << norm
                  << " scaled down to max_update_norm " << max_update_norm_;
      }
    }
    if (poison_for_test_ != 0) {
      for (float& v : *values) v = static_cast<float>(v * poison_for_test_);
      o.claimed_weight_for_test = 1e300;
    }
    auto result = allreduce_.Run(spec, o, values->data(), values->size(), weight, errors);
    if (!result.ok() || !r.audited()) return result;
    RETURN_IF_ERROR(SettleAudits(r, spec.my_index, *result, o.deadline + absl::Seconds(5)));
    return result;
  }

 private:
  // Reports this member's verdicts and waits for every auditor's: an audited
  // round is applied only when no reducer was found dishonest. Aborted when
  // one was (every member abandons the round, the dishonest one aside);
  // Unavailable when verdicts are still missing at `deadline`.
  absl::Status SettleAudits(const cv1::Round& r, uint32_t me,
                            const averaging::AllReduceResult& result, absl::Time deadline) {
    std::vector<cv1::AuditReport> reports;
    std::vector<averaging::AuditVerdict> verdicts = result.audits;
    for (const cv1::RoundAudit& a : r.audits()) {
      if (a.auditor() != me) continue;
      cv1::AuditReport& report = reports.emplace_back();
      report.set_span(a.span());
      report.set_verdict(cv1::AUDIT_INCOMPLETE);  // not judged here (the span failed)
      auto v = std::find_if(verdicts.begin(), verdicts.end(),
                            [&](const averaging::AuditVerdict& v) { return v.span == a.span(); });
      if (v == verdicts.end()) continue;
      switch (v->outcome) {
        case averaging::AuditOutcome::kPassed: report.set_verdict(cv1::AUDIT_PASSED); break;
        case averaging::AuditOutcome::kMismatch: report.set_verdict(cv1::AUDIT_MISMATCH); break;
        case averaging::AuditOutcome::kRefused: report.set_verdict(cv1::AUDIT_REFUSED); break;
        case averaging::AuditOutcome::kIncomplete: break;
      }
      report.set_detail(v->detail.substr(0, 256));
      verdicts.erase(v);
    }
    absl::Status last = absl::OkStatus();
    while (true) {
      auto status = coordinator_->ReportAudits(r.round_id(), reports);
      if (status.ok()) {
        reports.clear();  // recorded
        if (status->audit_failed()) {
          std::vector<std::string> who;
          for (uint32_t span : status->failed_spans()) {
            who.push_back(span < uint32_t(r.members_size()) ? r.members(span).peer_id() : "?");
          }
          return absl::AbortedError(absl::StrCat(
              "round ", r.round_id(), ": audits found the reduction of ", absl::StrJoin(who, ", "),
              " dishonest; no member applies the round"));
        }
        if (status->audits_pending() == 0) return absl::OkStatus();
      } else {
        last = status.status();
      }
      if (absl::Now() > deadline) {
        return absl::UnavailableError(absl::StrCat("round ", r.round_id(),
                                                   ": audit verdicts still missing at the "
                                                   "deadline; not applied (",
                                                   last.ToString(), ")"));
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
  }

  averaging::ButterflyAllReduce allreduce_;
  const std::string self_;
  const averaging::AllReduceOptions options_;
  const double max_update_norm_;
  CoordinatorClient* const coordinator_;
  const double poison_for_test_;
};

// This peer's state served by its StateService; others' fetched from the
// live reachable peers the coordinator lists.
class PeerStates final : public StateExchange {
 public:
  // `max_state_bytes`: the most a state of this model can take (a donor
  // announcing more is refused before anything is stored). `tamper_for_test`:
  // PeerOptions::serve_tampered_state_for_test.
  PeerStates(StateService* service, CoordinatorClient* coordinator, SecurityConfig security,
             uint64_t max_state_bytes, StateTamper tamper_for_test)
      : service_(service),
        coordinator_(coordinator),
        security_(std::move(security)),
        max_state_bytes_(max_state_bytes),
        tamper_for_test_(tamper_for_test) {}

  bool Wanted() const override { return service_->SnapshotWanted(); }
  void Publish(Snapshot s, bool current) override {
    if (tamper_for_test_ != StateTamper::kNone) {
      auto tampered = TamperedState(tamper_for_test_, std::move(s.bytes), max_state_bytes_);
      if (!tampered.ok()) {
        LOG(ERROR) << "tampering with the served state: " << tampered.status();
        return;
      }
      s.bytes = std::move(*tampered);
    }
    auto snapshot = std::make_shared<StateSnapshot>();
    snapshot->global_step = s.global_step;
    snapshot->sha256 = DigestToHex(Sha256Of(s.bytes));
    snapshot->bytes = std::move(s.bytes);
    service_->Publish(std::move(snapshot), current);
  }
  void StopServingCurrent() override { service_->StopServingCurrent(); }
  void AtStepBoundary(uint64_t global_step) override { service_->AtStepBoundary(global_step); }

  absl::StatusOr<Snapshot> FetchNewer(uint64_t global_step,
                                      const std::set<std::string>& refused) override {
    ASSIGN_OR_RETURN(auto peers, coordinator_->ListPeers());
    bool nobody_ahead = false;
    for (const auto& peer : peers) {
      if (peer.peer_id() == coordinator_->peer_id() || peer.address().empty() ||
          peer.reachability() != cv1::REACHABLE || refused.count(peer.peer_id()) > 0) {
        continue;
      }
      auto channel = MakeChannel(peer.address(), security_);
      if (!channel.ok()) continue;
      auto state = FetchState(*channel, absl::Minutes(2), max_state_bytes_, global_step);
      if (state.status().code() == absl::StatusCode::kFailedPrecondition) {
        nobody_ahead = true;  // it said so before sending its state
        continue;
      }
      if (!state.ok()) {
        LOG(WARNING) << "state download from " << peer.display_name() << " (" << peer.address()
                     << "): " << state.status();
        continue;
      }
      LOG(INFO) << "state of global step " << state->global_step << " from "
                << peer.display_name() << " at " << peer.address();
      return Snapshot{state->global_step, std::move(state->bytes), peer.peer_id()};
    }
    if (nobody_ahead) {
      return absl::FailedPreconditionError("no peer is ahead: no peer applied the missed update");
    }
    return absl::NotFoundError("no live peer could serve its training state");
  }

 private:
  StateService* const service_;
  CoordinatorClient* const coordinator_;
  const SecurityConfig security_;
  const uint64_t max_state_bytes_;
  const StateTamper tamper_for_test_;
};

// training::Trainer as the session's model.
class TrainerModel final : public LocalModel {
 public:
  explicit TrainerModel(training::Trainer* t) : t_(t) {}
  absl::StatusOr<double> AccumulateBatch(const data::Batch& b) override { return t_->AccumulateBatch(b); }
  int64_t accumulated_samples() const override { return t_->accumulated_samples(); }
  std::vector<std::string> AccumulatedKeys() const override { return t_->AccumulatedKeys(); }
  absl::StatusOr<std::vector<float>> AccumulatedGradient() const override {
    return t_->AccumulatedGradient();
  }
  absl::StatusOr<training::StepReport> ApplyUpdate(const std::vector<float>* g,
                                                   bool local_finite) override {
    return t_->ApplyUpdate(g, local_finite);
  }
  void DropAccumulated() override { t_->DropAccumulated(); }
  int64_t num_elements() const override { return t_->num_elements(); }
  absl::Status ReadParameters(std::vector<float>* out) const override { return t_->ReadParameters(out); }
  absl::Status WriteParameters(const std::vector<float>& v) override { return t_->WriteParameters(v); }
  absl::Status AddToParameters(const std::vector<float>& d) override { return t_->AddToParameters(d); }
  int64_t step() const override { return t_->step(); }
  void SetStep(int64_t step) override { t_->SetStep(step); }
  std::string ParameterHash() const override { return t_->ParameterHash(); }
  absl::StatusOr<std::string> ExportState(const StateExtras& extras) const override {
    return t_->ExportState(extras);
  }
  absl::Status ImportState(const std::string& bytes, StateExtras* extras) override {
    return t_->ImportState(bytes, extras);
  }
  absl::Status RecordMetrics(const training::StepReport& r,
                             const std::map<std::string, double>& extra) override {
    return t_->RecordMetrics(r, extra);
  }
  absl::StatusOr<std::string> SaveCheckpoint() override { return t_->SaveCheckpoint(); }
  absl::StatusOr<std::string> WriteSamples() override { return t_->WriteSamples(); }

 private:
  training::Trainer* const t_;
};

// The trainer on the chunks this peer leases.
class TrainerWorkload final : public PeerWorkload {
 public:
  static absl::StatusOr<std::unique_ptr<PeerWorkload>> Create(const WorkloadContext& c) {
    auto w = std::unique_ptr<TrainerWorkload>(new TrainerWorkload());
    training::TrainerOptions to = c.options->trainer;
    // The trainer counts its own optimizer steps: one per global step when
    // averaging gradients, H per outer step (the inner schedule spans them).
    to.max_steps = c.sync.mode == SyncMode::kOuter ? c.max_steps * c.sync.outer.local_steps
                                                   : c.max_steps;
    w->accumulation_ = to.gradient_accumulation_steps;
    if (to.model_dir.empty()) {
      // Every peer of the run starts from the model the run names.
      auto config = nlohmann::json::parse(c.join->run_config_json(), nullptr, false);
      if (!config.is_object() || !config.contains("model") || !config["model"].is_string()) {
        return absl::InvalidArgumentError(
            "no --model_dir, and the run configuration names no \"model\" to start from");
      }
      const std::string model_config =
          config.contains("model_config") && config["model_config"].is_string() ? config["model_config"].get<std::string>() : "";
      ASSIGN_OR_RETURN(to.model_dir, model::ResolveModel({config["model"].get<std::string>(), model_config,
                                                          c.options->hf_token_file, c.options->hf_variant}));
      LOG(INFO) << "model from the run configuration: " << to.model_dir;
    }
    // What is trained is the run's choice: every peer's vector must match.
    if (c.sync.lora.rank > 0) {
      to.lora.rank = c.sync.lora.rank;
      to.lora.alpha = c.sync.lora.alpha;
      if (!c.sync.lora.targets.empty()) to.lora.targets = c.sync.lora.targets;
    } else if (to.lora.rank > 0) {
      return absl::InvalidArgumentError(
          "--lora_rank is set but the run configuration has no \"lora_rank\": the peers of a run "
          "train LoRA only when the run says so (every peer must train the same adapters)");
    }
    ASSIGN_OR_RETURN(w->trainer_, training::Trainer::Create(to));
    w->model_ = std::make_unique<TrainerModel>(w->trainer_.get());
    // A private group's peers read the dataset with the run token (the
    // dataset service need not know the coordinator's key); a volunteer that
    // joined with an invitation reads with its peer credential, which the
    // dataset service verifies with --peer_public_key_file.
    SecurityConfig dataset_security = c.options->security;
    if (!absl::StartsWith(dataset_security.auth_token, kPeerCredentialPrefix)) {
      dataset_security.call_token.reset();
    }
    ASSIGN_OR_RETURN(auto dataset_channel,
                     MakeChannel(c.join->dataset_address(), dataset_security));
    w->dataset_ = std::make_unique<dataset::DatasetClient>(dataset_channel);
    ChunkStreamOptions co;
    co.cache_dir = to.output_dir + "/chunks";
    co.lease_timeout = absl::Milliseconds(c.join->lease_timeout_ms());
    ASSIGN_OR_RETURN(w->stream_, ChunkStream::Start(c.coordinator, w->dataset_.get(), co));
    w->batches_ = std::make_unique<ChunkBatches>(w->stream_.get(), training::LoaderOptionsFor(to),
                                                 to.seed);
    return w;
  }
  ~TrainerWorkload() override { Close(); }

  LocalModel* model() override { return model_.get(); }
  BatchSource* batches() override { return batches_.get(); }
  int micro_batches_per_step() const override { return accumulation_; }
  void Close() override {
    if (closed_ || stream_ == nullptr) return;  // nothing started (Create failed)
    closed_ = true;
    batches_->Close();
    stream_->Close();
    ChunkStreamStats cs = stream_->stats();
    LOG(INFO) << "peer's data: " << cs.downloaded << " chunks downloaded (" << cs.retried
              << " after retries), " << cs.completed << " completed, " << cs.failed << " failed";
  }

 private:
  TrainerWorkload() = default;
  int accumulation_ = 1;
  bool closed_ = false;
  std::unique_ptr<training::Trainer> trainer_;
  std::unique_ptr<TrainerModel> model_;
  std::unique_ptr<dataset::DatasetClient> dataset_;
  std::unique_ptr<ChunkStream> stream_;
  std::unique_ptr<ChunkBatches> batches_;
};

}  // namespace

absl::Status RunPeer(const PeerOptions& po) { return RunPeerWith(po, TrainerWorkload::Create); }

absl::Status RunPeerWith(const PeerOptions& options, const WorkloadFactory& make_workload) {
  // Every channel sends the run token until Join, then this peer's
  // credential; this peer's services accept the other peers' credentials
  // once Join told it the coordinator's key.
  PeerOptions po = options;
  if (po.trainer.image_log_steps > 0 && po.trainer.sample_prompts.empty()) {
    // A single run takes its dataset's captions; a peer sees chunks only
    // later, and whichever peer writes a round's grid must draw the same
    // prompts as the others did.
    return absl::InvalidArgumentError(
        "--image_log_steps in a collaboration needs --sample_prompts (the same on every peer)");
  }
  auto parsed_tamper = ParseStateTamper(po.serve_tampered_state_for_test);
  if (!parsed_tamper.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--serve_tampered_state_for_test: ", parsed_tamper.status().message()));
  }
  const StateTamper state_tamper = *parsed_tamper;
  if (!po.security.auth_token.empty()) {
    po.security.call_token = std::make_shared<CallToken>(po.security.auth_token);
    po.security.peer_verifier = std::make_shared<PeerVerifierSlot>();
  }
  // This peer's Averager service: the other members send it their values of
  // the span it reduces; its state service serves late joiners.
  averaging::AveragerService averager;
  if (po.scale_reduced_means_for_test != 0) {
    LOG(WARNING) << "dishonest reducer (a security test): every mean this peer reduces is "
                    "scaled by "
                 << po.scale_reduced_means_for_test;
    averager.TamperWithAnswersForTest(
        [scale = static_cast<float>(po.scale_reduced_means_for_test)](
            const averaging::v1::ReducePartRequest& request,
            averaging::v1::ReducePartResponse* response) {
          averaging::ScaleAveragedAnswerForTest(scale, request, response);
        });
  }
  StateService state_service(po.max_state_downloads);
  std::unique_ptr<ServiceHost> host;
  std::string listen_address;
  if (!po.client_only) {
    ServerOptions so;
    so.listen_address = po.listen;
    so.security = po.security;
    so.metrics = po.trainer.metrics;
    ASSIGN_OR_RETURN(host, ServiceHost::Start(so, {&averager, &state_service}));
    host->SetServing(true);
    std::vector<std::string> parts = absl::StrSplit(po.listen, absl::MaxSplits(':', 1));
    listen_address = absl::StrCat(parts[0], ":", host->port());
  }

  ASSIGN_OR_RETURN(auto channel, MakeChannel(po.coordinator, po.security));
  CoordinatorClient coordinator(channel, po.security.call_token);
  JoinOptions jo{listen_address, po.public_address, po.client_only, po.name};
  auto join = coordinator.Join(jo, absl::Minutes(1));
  if (!join.ok()) {
    return absl::UnavailableError(absl::StrCat("joining the coordinator at ", po.coordinator, ": ",
                                               join.status().message()));
  }
  if (po.security.peer_verifier != nullptr) {
    if (join->credential_public_key().empty()) {
      return absl::FailedPreconditionError(
          "the coordinator issued no peer credential (an older coordinator?)");
    }
    ASSIGN_OR_RETURN(auto verifier, CredentialVerifier::FromPublicKey(join->credential_public_key()));
    po.security.peer_verifier->Set(std::move(verifier));
  }
  LOG(INFO) << "joined run " << join->run_id() << " as " << join->peer_id() << " (incarnation "
            << join->incarnation() << "), averaging at "
            << (po.client_only ? "none (client only)" : listen_address);
  auto config = nlohmann::json::parse(join->run_config_json(), nullptr, false);
  if (!config.is_object()) return absl::FailedPreconditionError("the run config is not a JSON object");
  ASSIGN_OR_RETURN(SyncConfig sync_config, ParseSyncConfig(join->run_config_json()));
  if (!po.codec.empty()) {
    ASSIGN_OR_RETURN(sync_config.codec, averaging::CodecIdNamed(po.codec));
    RETURN_IF_ERROR(CheckSyncConfig(sync_config));
  }

  SessionOptions so;
  so.max_steps = config.contains("max_steps") ? config["max_steps"].get<int64_t>()
                                              : po.trainer.max_steps;
  WorkloadContext context{&po, &*join, &coordinator, sync_config, so.max_steps};
  ASSIGN_OR_RETURN(std::unique_ptr<PeerWorkload> workload, make_workload(context));
  LocalModel* model = workload->model();
  std::unique_ptr<Synchronizer> sync;
  if (sync_config.mode == SyncMode::kOuter) {
    ASSIGN_OR_RETURN(sync, MakeOuterSync(model, sync_config.outer, workload->micro_batches_per_step()));
  } else {
    sync = MakeGradientSync(model);
  }
  LOG(INFO) << "sync: " << SyncModeName(sync_config.mode) << ", codec "
            << averaging::CodecFor(sync_config.codec).name()
            << (sync_config.mode == SyncMode::kOuter
                    ? absl::StrCat(", H = ", sync_config.outer.local_steps, " local steps (up to ",
                                   MaxLocalSteps(sync_config.outer), " while a round has not opened), outer lr ",
                                   sync_config.outer.lr, ", momentum ", sync_config.outer.momentum,
                                   sync_config.outer.overlap ? ", overlapped" : "")
                    : "")
            << (sync_config.aggregation == averaging::Aggregation::kCenteredClip
                    ? absl::StrCat(", CenteredClip (tau ", sync_config.clip_tau, ")")
                    : ", mean")
            << (sync_config.max_update_norm > 0
                    ? absl::StrCat(", contributions bounded to norm ", sync_config.max_update_norm)
                    : "");

  GrpcCoordinatorLink link(&coordinator,
                           absl::Milliseconds(std::max<uint32_t>(join->heartbeat_interval_ms(), 100)));
  averaging::AllReduceOptions ar;
  ar.codec = sync_config.codec;
  ar.aggregation = sync_config.aggregation;
  ar.clip_tau = sync_config.clip_tau;
  ar.sender_timeout = po.sender_timeout;
  ar.reducer_timeout = po.reducer_timeout;
  ButterflyRoundAverager round_averager(&averager, po.security, join->peer_id(), ar,
                                        sync_config.max_update_norm, &coordinator,
                                        po.poison_contributions_for_test);
  if (po.poison_contributions_for_test != 0) {
    LOG(WARNING) << "poisoned sender (a security test): every contribution is sent times "
                 << po.poison_contributions_for_test << " with weight 1e300";
  }
  // A state holds the trained parameters, two optimizer moments and an EMA
  // copy in float32 at most (16 bytes per value), the outer optimizer's
  // global copy and momentum (8 more) and metadata: 32 bytes per value and
  // 64 MiB leave room for all of them.
  const uint64_t max_state_bytes = 32 * static_cast<uint64_t>(model->num_elements()) + (64 << 20);
  if (state_tamper != StateTamper::kNone) {
    LOG(WARNING) << "dishonest donor (a security test): the states this peer serves are "
                    "tampered with (" << po.serve_tampered_state_for_test << ")";
  }
  PeerStates states(&state_service, &coordinator, po.security, max_state_bytes, state_tamper);

  so.max_local_samples_per_step = po.max_local_samples_per_step;
  so.bandwidth_mbps = po.bandwidth_mbps;
  so.linger = po.linger_after_run;
  // A collaboration's designated writer checkpoints only when asked to
  // (--save_steps > 0), then also after the last step.
  so.outputs = {po.trainer.save_steps, po.trainer.image_log_steps, po.trainer.save_steps > 0};
  so.write_samples = po.trainer.image_log_steps > 0;
  so.trained_keys_log = po.trained_keys_log;
  so.nan_contribution_at_step_for_test = po.nan_contribution_at_step_for_test;
  absl::Status result;
  SessionStats stats;
  {
    PeerSession session(so, sync.get(), &link, workload->batches(), model, &round_averager, &states);
    result = session.Run();
    stats = session.stats();
  }
  workload->Close();
  if (absl::Status s = coordinator.Leave(); !s.ok()) LOG(WARNING) << "leaving: " << s;
  LOG(INFO) << "peer done: " << stats.stale_dropped << " stale contributions dropped, "
            << stats.rounds_failed << " rounds failed, " << stats.resyncs
            << " resynchronisations; sent " << stats.bytes_sent << " B, received "
            << stats.bytes_received << " B";
  LOG(INFO) << "final parameters " << sync->Hash();
  if (host) host->Shutdown(absl::Seconds(2));
  return result;
}

}  // namespace dd::collab
