#include "trainer/collab/peer.h"

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <thread>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/progress/progress_line.h"
#include "common/rpc/channel.h"
#include "common/rpc/server.h"
#include "common/status/status_macros.h"
#include "services/dataset/dataset_client.h"
#include "trainer/averaging/butterfly.h"
#include "trainer/collab/chunk_stream.h"
#include "common/crypto/sha256.h"
#include "trainer/collab/coordinator_client.h"
#include "trainer/collab/state_service.h"
#include "trainer/data/data_loader.h"
#include "trainer/data/sample_source.h"

namespace dd::collab {
namespace {

using Clock = std::chrono::steady_clock;

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

}  // namespace

// Downloads the training state from a live reachable peer (other than
// `self`) and loads it. NotFound when no peer could serve it.
absl::Status Resync(CoordinatorClient& coordinator, training::Trainer& trainer,
                    const SecurityConfig& security, const std::string& why) {
  ASSIGN_OR_RETURN(auto peers, coordinator.ListPeers());
  for (const auto& peer : peers) {
    if (peer.peer_id() == coordinator.peer_id() || peer.address().empty() ||
        peer.reachability() != cv1::REACHABLE) {
      continue;
    }
    auto channel = MakeChannel(peer.address(), security);
    if (!channel.ok()) continue;
    auto state = FetchState(*channel, absl::Minutes(2));
    if (!state.ok()) {
      LOG(WARNING) << "state download from " << peer.display_name() << " (" << peer.address()
                   << "): " << state.status();
      continue;
    }
    if (state->global_step <= static_cast<uint64_t>(trainer.step())) {
      // The donor is not ahead either: the update this peer "missed" was
      // never applied by anyone (e.g. the coordinator died after opening the
      // round). Every peer still has the same weights.
      return absl::FailedPreconditionError(absl::StrCat(
          peer.display_name(), " is at global step ", state->global_step, " too: no peer applied the missed update"));
    }
    absl::Status loaded = trainer.ImportState(state->bytes);
    if (!loaded.ok()) {
      LOG(WARNING) << "state from " << peer.address() << " does not fit this model: " << loaded;
      continue;
    }
    LOG(INFO) << "resynchronised (" << why << "): downloaded the state of global step "
              << state->global_step << " (" << state->bytes.size() << " bytes) from "
              << peer.display_name() << " at " << peer.address() << ", params "
              << trainer.ParameterHash().substr(0, 16);
    return absl::OkStatus();
  }
  return absl::NotFoundError("no live peer could serve its training state");
}

absl::Status RunPeer(const PeerOptions& po) {
  // This peer's Averager service: the other members send it their values of
  // the span it reduces; its state service serves late joiners.
  averaging::AveragerService averager;
  StateService state_service(po.max_state_downloads);
  std::unique_ptr<ServiceHost> host;
  std::string listen_address;
  if (!po.client_only) {
    ServerOptions so;
    so.listen_address = po.listen;
    so.security = po.security;
    ASSIGN_OR_RETURN(host, ServiceHost::Start(so, {&averager, &state_service}));
    host->SetServing(true);
    std::vector<std::string> parts = absl::StrSplit(po.listen, absl::MaxSplits(':', 1));
    listen_address = absl::StrCat(parts[0], ":", host->port());
  }

  ASSIGN_OR_RETURN(auto channel, MakeChannel(po.coordinator, po.security));
  CoordinatorClient coordinator(channel);
  JoinOptions jo{listen_address, po.public_address, po.client_only, po.name};
  auto join = coordinator.Join(jo, absl::Minutes(1));
  if (!join.ok()) {
    return absl::UnavailableError(absl::StrCat("joining the coordinator at ", po.coordinator, ": ",
                                               join.status().message()));
  }
  LOG(INFO) << "joined run " << join->run_id() << " as " << join->peer_id() << " (incarnation "
            << join->incarnation() << "), averaging at "
            << (po.client_only ? "none (client only)" : listen_address);
  auto config = nlohmann::json::parse(join->run_config_json(), nullptr, false);
  if (!config.is_object()) return absl::FailedPreconditionError("the run config is not a JSON object");

  training::TrainerOptions to = po.trainer;
  to.external_data = true;
  if (config.contains("max_steps")) to.max_steps = config["max_steps"].get<int64_t>();
  std::string codec_name = !po.codec.empty() ? po.codec : config.value("codec", std::string("none"));
  ASSIGN_OR_RETURN(averaging::CodecId codec, averaging::CodecIdNamed(codec_name));
  ASSIGN_OR_RETURN(auto trainer, training::Trainer::Create(to));
  ASSIGN_OR_RETURN(cv1::RunState state, coordinator.GetRunState());
  if (state.global_step() > static_cast<uint64_t>(trainer->step())) {
    // A late joiner: start from the collaboration's weights, not the base.
    absl::Status synced = Resync(coordinator, *trainer, po.security, "late join");
    if (!synced.ok()) {
      LOG(WARNING) << "the collaboration is at step " << state.global_step() << " but " << synced
                   << "; starting from this peer's own weights";
      trainer->SetStep(static_cast<int64_t>(state.global_step()));
    }
  }

  ASSIGN_OR_RETURN(auto dataset_channel, MakeChannel(join->dataset_address(), po.security));
  dataset::DatasetClient dataset(dataset_channel);
  ChunkStreamOptions co;
  co.cache_dir = to.output_dir + "/chunks";
  co.lease_timeout = absl::Milliseconds(join->lease_timeout_ms());
  ASSIGN_OR_RETURN(auto stream, ChunkStream::Start(&coordinator, &dataset, co));
  Heartbeats heartbeats(&coordinator, absl::Milliseconds(std::max<uint32_t>(join->heartbeat_interval_ms(), 100)));

  averaging::ButterflyAllReduce allreduce(&averager, po.security);
  const data::LoaderOptions base_lo = training::LoaderOptionsFor(to);
  std::unique_ptr<data::DataLoader> loader;
  LocalChunk chunk;
  int64_t chunk_samples = 0;
  uint64_t last_round = 0;
  absl::Time last_report = absl::InfinitePast();
  double compute_s = 0;  // in AccumulateBatch since the last update
  auto step_start = Clock::now();
  int64_t stale_dropped = 0, rounds_failed = 0, nonfinite_rounds = 0;
  double window_samples = 0;
  auto window_start = Clock::now();
  ProgressLine progress("collaborative training", to.max_steps, "steps");
  absl::Status result;
  auto publish = [&](bool current) {
    auto bytes = trainer->ExportState();
    if (!bytes.ok()) {
      LOG(WARNING) << "state snapshot: " << bytes.status();
      return;
    }
    auto snapshot = std::make_shared<StateSnapshot>();
    snapshot->global_step = trainer->step();
    snapshot->bytes = std::move(*bytes);
    snapshot->sha256 = DigestToHex(Sha256Of(snapshot->bytes));
    state_service.Publish(std::move(snapshot), current);
  };
  auto publish_if_wanted = [&] {
    if (state_service.SnapshotWanted()) publish(false);
  };
  // Resynchronises, serving this peer's own state meanwhile (peers that
  // missed the same round ask each other); when no one is ahead, takes the
  // collaboration's step with the weights every peer shares.
  auto resync = [&](const std::string& why, uint64_t collaboration_step) {
    publish(true);
    absl::Status synced = Resync(coordinator, *trainer, po.security, why);
    state_service.StopServingCurrent();
    if (!synced.ok()) {
      LOG(WARNING) << "not resynchronised (" << synced << "); continuing at global step "
                   << collaboration_step << " with this peer's weights";
      trainer->SetStep(static_cast<int64_t>(collaboration_step));
    }
  };
  while (trainer->step() < to.max_steps) {
    publish_if_wanted();  // any point between updates is a step boundary
    const bool may_accumulate = po.max_local_samples_per_step <= 0 ||
                                trainer->accumulated_samples() < po.max_local_samples_per_step;
    if (may_accumulate) {
      if (!loader) {
        auto next = stream->Next(absl::Minutes(5));
        if (!next.ok()) {
          result = next.status();
          break;
        }
        chunk = *next;
        chunk_samples = 0;
        auto listing = data::ListSamples(chunk.path);
        if (!listing.ok()) {
          LOG(WARNING) << "chunk " << chunk.chunk_id << " cannot be read (" << listing.status()
                       << "); reported with 0 samples and skipped";
          (void)stream->Complete(chunk, 0);
          continue;
        }
        data::LoaderOptions lo = base_lo;
        lo.max_epochs = 1;
        lo.seed = to.seed ^ (chunk.chunk_id * 0x9E3779B97F4A7C15ull);
        auto started = data::DataLoader::Start(listing->samples, lo);
        if (!started.ok()) {
          result = started.status();
          break;
        }
        loader = std::move(*started);
      }
      auto batch = loader->Next();
      if (!batch.ok() || !batch->has_value()) {
        if (!batch.ok()) LOG(WARNING) << "chunk " << chunk.chunk_id << ": " << batch.status();
        absl::Status done = stream->Complete(chunk, static_cast<uint32_t>(chunk_samples));
        if (!done.ok()) LOG(WARNING) << "completing chunk " << chunk.chunk_id << ": " << done;
        loader.reset();
        continue;
      }
      const auto compute_start = Clock::now();
      auto loss = trainer->AccumulateBatch(**batch);
      compute_s += std::chrono::duration<double>(Clock::now() - compute_start).count();
      if (!loss.ok()) {
        result = loss.status();
        break;
      }
      chunk_samples += (*batch)->pixels.size(0);
      window_samples += (*batch)->pixels.size(0);
    }
    const double elapsed = std::chrono::duration<double>(Clock::now() - window_start).count();
    const double rate = elapsed > 0 ? window_samples / elapsed : 0;
    heartbeats.SetRate(rate);
    // A round that includes this peer (opened by someone's report)?
    auto round = coordinator.GetRound(last_round);
    if (round.ok() && !round->has_value() &&
        (may_accumulate || absl::Now() - last_report > absl::Seconds(5))) {
      // Tell the coordinator what this peer has (after each new batch, and
      // every few seconds while waiting so the report does not expire).
      last_report = absl::Now();
      auto report = coordinator.Report(trainer->step(), trainer->accumulated_samples(), rate);
      if (!report.ok()) {
        if (report.status().code() != absl::StatusCode::kFailedPrecondition) {
          LOG(WARNING) << "progress report: " << report.status();
        }
        round = coordinator.GetRound(last_round);
        if (report.status().code() == absl::StatusCode::kFailedPrecondition &&
            (!round.ok() || !round->has_value())) {
          // A round went ahead without this peer: its gradients are for a
          // past step. Drop them and continue at the collaboration's step.
          auto now = coordinator.GetRunState();
          ++stale_dropped;
          LOG(WARNING) << "stale gradients dropped (" << report.status().message() << ")";
          trainer->DropAccumulated();
          // It missed an update: take the collaboration's state.
          resync("missed a round", now.ok() ? now->global_step() : trainer->step() + 1);
          continue;
        }
      } else {
        round = coordinator.GetRound(last_round);
      }
    }
    if (!round.ok() || !round->has_value()) {
      if (!may_accumulate) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    const cv1::Round& r = **round;
    last_round = r.round_id();
    if (r.global_step() != static_cast<uint64_t>(trainer->step())) {
      LOG(WARNING) << "round " << r.round_id() << " is for step " << r.global_step()
                   << ", this peer is at " << trainer->step() << "; skipped";
      continue;
    }
    averaging::RoundSpec spec;
    spec.round_id = r.round_id();
    std::vector<double> shares;
    for (int i = 0; i < r.members_size(); ++i) {
      spec.peer_ids.push_back(r.members(i).peer_id());
      spec.addresses.push_back(r.members(i).address());
      shares.push_back(r.members(i).span_share());
      if (r.members(i).peer_id() == coordinator.peer_id()) spec.my_index = i;
    }
    const int64_t n = trainer->num_elements();
    spec.span_starts = averaging::SplitSpans(n, r.members_size(), shares);
    const auto round_start = Clock::now();
    const int64_t local_samples = trainer->accumulated_samples();
    std::vector<float> gradient(n, 0.0f);
    if (local_samples > 0) {
      auto g = trainer->AccumulatedGradient();
      if (!g.ok()) {
        result = g.status();
        break;
      }
      gradient = std::move(*g);
    }
    double weight = static_cast<double>(local_samples);
    if (po.debug_nan_at_step > 0 && trainer->step() + 1 == po.debug_nan_at_step && !gradient.empty()) {
      gradient[gradient.size() / 2] = NAN;  // fault injection for tests
    }
    const bool local_finite = averaging::AllFinite(gradient.data(), gradient.size());
    if (!local_finite) {
      // Take part with nothing: zeros at weight 0 keep the round's spans
      // served and leave the others' mean untouched, and this peer applies
      // the same averaged update as everyone else.
      ++nonfinite_rounds;
      LOG(WARNING) << "global step " << trainer->step() + 1
                   << ": local gradients are not finite; contributing weight 0";
      std::fill(gradient.begin(), gradient.end(), 0.0f);
      weight = 0;
    }
    averaging::AllReduceOptions ar;
    ar.codec = codec;
    ar.sender_timeout = po.sender_timeout;
    ar.reducer_timeout = po.reducer_timeout;
    ar.deadline = absl::FromUnixMillis(r.deadline_unix_ms());
    auto averaged = allreduce.Run(spec, ar, gradient.data(), gradient.size(), weight);
    const double averaging_s = std::chrono::duration<double>(Clock::now() - round_start).count();
    if (!averaged.ok()) {
      // Nothing averaged (e.g. non-finite local gradients refused before
      // sending): this peer misses the step and drops its gradients.
      ++rounds_failed;
      LOG(WARNING) << "round " << r.round_id() << " failed on this peer: " << averaged.status();
      trainer->DropAccumulated();
      resync("failed round", r.global_step() + 1);
      continue;
    }
    const std::vector<std::string> contributed =
        weight > 0 ? trainer->AccumulatedKeys() : std::vector<std::string>();
    const auto apply_start = Clock::now();
    auto step = trainer->ApplyUpdate(&gradient, local_finite);
    if (!step.ok()) {
      result = step.status();
      break;
    }
    const double optimizer_s = std::chrono::duration<double>(Clock::now() - apply_start).count();
    if (!po.trained_keys_log.empty()) {
      std::ofstream keys(po.trained_keys_log, std::ios::app);
      for (const std::string& key : contributed) keys << step->step << " " << key << "\n";
      if (!keys.good()) LOG(WARNING) << "cannot append to " << po.trained_keys_log;
    }
    const double step_s = std::chrono::duration<double>(Clock::now() - step_start).count();
    const std::string hash = trainer->ParameterHash();
    LOG(INFO) << absl::StrFormat(
        "global step %d: %d members, %d local samples of %d, fraction averaged %.3f, averaging "
        "%.2fs, sent %d B, received %d B, loss %.4f, params %s",
        step->step, r.members_size(), local_samples, r.total_samples(),
        averaged->fraction_averaged, averaging_s, averaged->bytes_sent, averaged->bytes_received,
        step->loss, hash.substr(0, 16));
    RETURN_IF_ERROR(trainer->RecordMetrics(
        *step, {{"members", double(r.members_size())},
                {"global_samples", double(r.total_samples())},
                {"global_samples_per_second", step_s > 0 ? r.total_samples() / step_s : 0.0},
                {"local_samples_per_second", rate},
                {"averaging_seconds", averaging_s},
                {"step_seconds", step_s},
                {"compute_seconds", compute_s + optimizer_s},
                {"waiting_seconds", std::max(0.0, step_s - compute_s - optimizer_s - averaging_s)},
                {"fraction_averaged", averaged->fraction_averaged},
                {"bytes_sent", double(averaged->bytes_sent)},
                {"bytes_received", double(averaged->bytes_received)},
                {"stale_gradients_dropped", double(stale_dropped)},
                {"rounds_failed", double(rounds_failed)},
                {"nonfinite_gradients", double(nonfinite_rounds)}}));
    progress.Update(step->step, 0,
                    absl::StrFormat("loss %.4f, %d members, %.1f local / %.1f global img/s",
                                    step->loss, r.members_size(), rate,
                                    step_s > 0 ? r.total_samples() / step_s : 0.0));
    // The round's first member writes checkpoints and samples, so N peers
    // do not write N copies.
    const bool designated = spec.my_index == 0;
    const bool last = trainer->step() >= to.max_steps;
    if (designated && to.save_steps > 0 && (trainer->step() % to.save_steps == 0 || last)) {
      ASSIGN_OR_RETURN(std::string dir, trainer->SaveCheckpoint());
      LOG(INFO) << "checkpoint (designated writer): " << dir;
    }
    if (designated && to.image_log_steps > 0 && !to.sample_prompts.empty() &&
        (trainer->step() % to.image_log_steps == 0 || last)) {
      ASSIGN_OR_RETURN(std::string grid, trainer->WriteSamples());
      LOG(INFO) << "samples (designated writer): " << grid;
    }
    window_samples = 0;
    window_start = Clock::now();
    compute_s = 0;
    step_start = Clock::now();
  }
  if (loader && chunk_samples > 0) {
    // The chunk being trained counts with what was trained of it; the
    // prefetched ones are released by Close.
    absl::Status done = stream->Complete(chunk, static_cast<uint32_t>(chunk_samples));
    if (!done.ok()) LOG(WARNING) << "completing chunk " << chunk.chunk_id << ": " << done;
  }
  loader.reset();
  stream->Close();
  ChunkStreamStats cs = stream->stats();
  if (absl::Status s = coordinator.Leave(); !s.ok()) LOG(WARNING) << "leaving: " << s;
  progress.Finish(absl::StrFormat("%d chunks downloaded (%d after retries), %d completed, %d "
                                  "failed; %d stale gradients dropped",
                                  cs.downloaded, cs.retried, cs.completed, cs.failed, stale_dropped));
  LOG(INFO) << "final parameters " << trainer->ParameterHash();
  if (host) host->Shutdown(absl::Seconds(2));
  return result;
}

}  // namespace dd::collab
