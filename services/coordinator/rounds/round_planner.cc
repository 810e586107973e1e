#include "services/coordinator/rounds/round_planner.h"

#include <algorithm>
#include <cmath>
#include <set>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"

namespace dd::coordinator {

std::vector<double> SpanShares(const std::vector<double>& bandwidth_mbps) {
  std::vector<double> reported;
  for (double b : bandwidth_mbps) {
    if (b > 0) reported.push_back(b);
  }
  if (reported.empty()) return std::vector<double>(bandwidth_mbps.size(), 1.0);
  std::sort(reported.begin(), reported.end());
  // The lower median: with two members, the mean of the middle values
  // would be half of an attacker's claim, and the honest member's share
  // would be clamped up to an eighth of it.
  const double median = reported[(reported.size() - 1) / 2];
  std::vector<double> shares;
  for (double b : bandwidth_mbps) {
    shares.push_back(b > 0 ? std::clamp(b, median / kMaxShareRatio, median * kMaxShareRatio)
                           : median);
  }
  return shares;
}

namespace v1 = ::distdiff::coordinator::v1;

RoundPlanner::RoundPlanner(RoundPlannerOptions options, Clock* clock)
    : options_(std::move(options)), clock_(clock), started_(clock->Now()) {
  absl::MutexLock lock(&mu_);
  global_step_ = options_.initial_global_step;
}

absl::StatusOr<v1::ReportProgressResponse> RoundPlanner::Report(
    const std::string& peer_id, uint64_t global_step, uint64_t samples, double samples_per_second,
    double bandwidth_mbps, const std::function<MemberInfo(const std::string&)>& peer_info) {
  if (!std::isfinite(samples_per_second) || samples_per_second < 0 ||
      !std::isfinite(bandwidth_mbps) || bandwidth_mbps < 0) {
    return absl::InvalidArgumentError("rates must be finite and >= 0");
  }
  if (samples > (uint64_t{1} << 40)) return absl::InvalidArgumentError("samples is implausible");
  absl::MutexLock lock(&mu_);
  if (global_step != global_step_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the collaboration is at global step ", global_step_, ", not ", global_step,
        ": drop stale gradients and resynchronise"));
  }
  absl::Time now = clock_->Now();
  for (auto& r : rounds_) ResolveLocked(&r, now);  // silent members fail theirs
  reports_[peer_id] = PeerReport{samples, bandwidth_mbps, now};
  uint64_t total = 0;
  for (auto it = reports_.begin(); it != reports_.end();) {
    if (now - it->second.at > options_.report_ttl) {
      it = reports_.erase(it);
      continue;
    }
    total += it->second.samples;
    ++it;
  }
  v1::ReportProgressResponse response;
  response.set_target_batch_size(options_.target_batch_size);
  if (total >= options_.target_batch_size) {
    if (options_.persist_step) {
      if (absl::Status s = options_.persist_step(global_step_ + 1); !s.ok()) {
        LOG(ERROR) << "global step " << global_step_ + 1 << " could not be persisted: " << s;
        return absl::UnavailableError(absl::StrCat("the coordinator could not persist global step ",
                                                   global_step_ + 1, ": ", s.message()));
      }
    }
    v1::Round round;
    // One round opens per global step, and the step is durable: an id
    // derived from it never repeats after a restart (a counter from 1
    // would, and peers asking for rounds after the last id they saw would
    // miss the new ones).
    round.set_round_id(global_step_ + 1);
    round.set_global_step(global_step_);
    round.set_opened_unix_ms(absl::ToUnixMillis(now));
    round.set_deadline_unix_ms(absl::ToUnixMillis(now + options_.round_timeout));
    round.set_total_samples(total);
    std::vector<double> bandwidths;
    for (const auto& [id, r] : reports_) bandwidths.push_back(r.bandwidth_mbps);
    const std::vector<double> shares = SpanShares(bandwidths);
    // Every peer that reported toward this step is a member, also with no
    // samples yet (it announced itself as it started the step and
    // contributes what it has trained when the round starts).
    size_t k = 0;
    for (const auto& [id, r] : reports_) {
      v1::RoundMember* m = round.add_members();
      m->set_peer_id(id);
      m->set_samples(r.samples);
      MemberInfo info = peer_info(id);
      m->set_address(info.address);
      if (!info.address.empty()) m->set_span_share(shares[k]);
      ++k;
    }
    // Audits: parts of every reducing member's span, each reduced again by
    // a different other reducing member (it must receive copies), chosen at
    // random like the parts.
    std::vector<uint32_t> reducers;
    for (int i = 0; i < round.members_size(); ++i) {
      if (!round.members(i).address().empty()) reducers.push_back(i);
    }
    if (options_.reducer_audits > 0 && reducers.size() >= 2) {
      round.set_audited(true);
      for (uint32_t span : reducers) {
        std::vector<uint32_t> others;
        for (uint32_t r : reducers) {
          if (r != span) others.push_back(r);
        }
        std::shuffle(others.begin(), others.end(), random_);
        others.resize(std::min<size_t>(others.size(), options_.reducer_audits));
        for (uint32_t auditor : others) {
          v1::RoundAudit* audit = round.add_audits();
          audit->set_span(span);
          audit->set_part_seed(absl::Uniform<uint64_t>(random_));
          audit->set_auditor(auditor);
        }
      }
      round.set_audits_pending(round.audits_size());
    }
    LOG(INFO) << "round " << round.round_id() << " for global step " << global_step_ << ": "
              << round.members_size() << " members, " << total << " samples"
              << (round.audited() ? absl::StrCat(", ", round.audits_size(), " audits") : "");
    Notify({RoundEvent::Kind::kOpened, round.round_id()});
    rounds_.push_front(std::move(round));
    if (rounds_.size() > options_.rounds_kept) rounds_.pop_back();
    ++global_step_;
    reports_.clear();
    total = 0;
  }
  response.set_global_step(global_step_);
  response.set_collaboration_samples(total);
  return response;
}

std::optional<v1::Round> RoundPlanner::RoundFor(const std::string& peer_id,
                                                uint64_t after_round_id) const {
  absl::MutexLock lock(&mu_);
  for (const auto& r : rounds_) {  // newest first
    if (r.round_id() <= after_round_id) break;
    for (int i = 0; i < r.members_size(); ++i) {
      if (r.members(i).peer_id() != peer_id) continue;
      // The member learns of the audits of the others' spans only, and of
      // no verdict.
      v1::Round mine = r;
      mine.clear_audits();
      for (const v1::RoundAudit& a : r.audits()) {
        if (a.span() == static_cast<uint32_t>(i)) continue;
        v1::RoundAudit* kept = mine.add_audits();
        kept->set_span(a.span());
        kept->set_part_seed(a.part_seed());
        kept->set_auditor(a.auditor());
      }
      return mine;
    }
  }
  return std::nullopt;
}

std::vector<v1::Round> RoundPlanner::Recent() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  std::vector<v1::Round> recent;
  for (auto& r : rounds_) {
    ResolveLocked(&r, now);
    recent.push_back(r);
    if (r.audits_pending() > 0) recent.back().clear_audits();
  }
  return recent;
}

absl::StatusOr<AuditStatus> RoundPlanner::RecordAudits(const std::string& peer_id,
                                                       uint64_t round_id,
                                                       const std::vector<v1::AuditReport>& reports) {
  for (const v1::AuditReport& report : reports) {
    if (report.verdict() == v1::AUDIT_PENDING || !v1::AuditVerdict_IsValid(report.verdict())) {
      return absl::InvalidArgumentError("a verdict must be PASSED, MISMATCH, REFUSED or INCOMPLETE");
    }
    if (report.detail().size() > 256) {
      return absl::InvalidArgumentError("a verdict's detail is at most 256 bytes");
    }
  }
  absl::MutexLock lock(&mu_);
  for (auto& r : rounds_) {
    if (r.round_id() != round_id) continue;
    int me = -1;
    for (int i = 0; i < r.members_size(); ++i) {
      if (r.members(i).peer_id() == peer_id) me = i;
    }
    if (me < 0) {
      return absl::PermissionDeniedError(
          absl::StrCat("peer ", peer_id, " is not a member of round ", round_id));
    }
    // All checked before anything is recorded.
    for (const v1::AuditReport& report : reports) {
      bool assigned = false;
      for (const v1::RoundAudit& a : r.audits()) {
        assigned |= a.span() == report.span() && a.auditor() == static_cast<uint32_t>(me);
      }
      if (!assigned) {
        return absl::PermissionDeniedError(absl::StrCat(
            "peer ", peer_id, " was not assigned to audit span ", report.span(), " of round ",
            round_id));
      }
    }
    AuditStatus status;
    for (const v1::AuditReport& report : reports) {
      for (v1::RoundAudit& a : *r.mutable_audits()) {
        if (a.span() != report.span() || a.auditor() != static_cast<uint32_t>(me) ||
            a.verdict() != v1::AUDIT_PENDING) {
          continue;
        }
        a.set_verdict(report.verdict());
        a.set_detail(report.detail());
        if (report.verdict() == v1::AUDIT_MISMATCH || report.verdict() == v1::AUDIT_REFUSED) {
          status.accusations.emplace_back(r.members(a.span()).peer_id(), peer_id);
        }
        break;  // one verdict per report
      }
    }
    std::set<uint32_t> failed;
    for (const v1::RoundAudit& a : r.audits()) {
      if (a.verdict() == v1::AUDIT_PENDING) ++status.pending;
      if (a.verdict() == v1::AUDIT_MISMATCH || a.verdict() == v1::AUDIT_REFUSED) {
        failed.insert(a.span());
      }
    }
    status.failed = !failed.empty();
    status.failed_spans.assign(failed.begin(), failed.end());
    r.set_audits_pending(status.pending);
    r.set_audit_failed(status.failed);
    return status;
  }
  return absl::NotFoundError(absl::StrCat("round ", round_id, " is not (or no longer) kept"));
}

absl::Status RoundPlanner::RecordResult(const std::string& peer_id, uint64_t round_id,
                                        bool applied, double averaging_seconds) {
  if (!std::isfinite(averaging_seconds) || averaging_seconds < 0 || averaging_seconds > 86400) {
    return absl::InvalidArgumentError(
        absl::StrCat("averaging_seconds ", averaging_seconds, " is not within [0, 86400]"));
  }
  absl::MutexLock lock(&mu_);
  for (auto& r : rounds_) {
    if (r.round_id() != round_id) continue;
    for (auto& m : *r.mutable_members()) {
      if (m.peer_id() != peer_id) continue;
      if (m.outcome() == v1::ROUND_PENDING) {
        m.set_outcome(applied ? v1::ROUND_APPLIED : v1::ROUND_FAILED);
        m.set_averaging_seconds(averaging_seconds);
      }
      ResolveLocked(&r, clock_->Now());
      return absl::OkStatus();
    }
    return absl::PermissionDeniedError(
        absl::StrCat("peer ", peer_id, " is not a member of round ", round_id));
  }
  // The round that made the step this planner started at went with the old
  // process (its members were told of it just before): a member that says
  // it failed that round holds the step before's weights.
  const auto& at_start = options_.members_at_start;
  if (round_id == options_.initial_global_step && round_id > 0 &&
      std::find(at_start.begin(), at_start.end(), peer_id) != at_start.end()) {
    if (!applied) failed_start_round_.insert(peer_id);
    return absl::OkStatus();
  }
  return absl::NotFoundError(absl::StrCat("round ", round_id, " is not (or no longer) kept"));
}

void RoundPlanner::ResolveLocked(v1::Round* round, absl::Time now) {
  if (round->outcome() != v1::ROUND_PENDING) return;
  bool all_applied = true;
  double slowest = 0;
  for (const auto& m : round->members()) {
    if (m.outcome() == v1::ROUND_FAILED) {
      round->set_outcome(v1::ROUND_FAILED);
      Notify({RoundEvent::Kind::kFailed, round->round_id()});
      return;
    }
    all_applied = all_applied && m.outcome() == v1::ROUND_APPLIED;
    slowest = std::max(slowest, m.averaging_seconds());
  }
  if (all_applied) {
    round->set_outcome(v1::ROUND_APPLIED);
    round->set_duration_seconds(slowest);
    Notify({RoundEvent::Kind::kApplied, round->round_id(), slowest});
  } else if (now > absl::FromUnixMillis(round->deadline_unix_ms()) + options_.report_ttl) {
    // A silent member died or lost the coordinator: the others resync from
    // whoever applied the step, but the round did not work as planned.
    round->set_outcome(v1::ROUND_FAILED);
    Notify({RoundEvent::Kind::kFailed, round->round_id()});
  }
}

void RoundPlanner::Notify(const RoundEvent& event) const {
  if (options_.on_round_event) options_.on_round_event(event);
}

uint64_t RoundPlanner::global_step() const {
  absl::MutexLock lock(&mu_);
  return global_step_;
}

HashVote::Verdict RoundPlanner::JudgeHash(const std::string& peer_id, uint64_t step,
                                          const std::string& hash) {
  HashVote::Verdict verdict = hashes_.Record(peer_id, step, hash);
  if (verdict.diverged) {
    absl::MutexLock lock(&mu_);
    reports_.erase(peer_id);
  }
  return verdict;
}

v1::GetStepHashResponse RoundPlanner::ConfirmedHash(uint64_t step) {
  v1::GetStepHashResponse out;
  // A step whose round nobody applied (every member failed it, or an audit
  // failed it and the honest members abandoned it) left the weights of the
  // step before: those confirm it.
  uint64_t made_by = step;
  std::vector<std::string> eligible;
  // Peers known at the start that failed the round of the start step: they
  // count only when none of the others can say (then nobody applied it).
  std::vector<std::string> failed_at_start;
  std::set<std::string> departed;
  bool silent_members_at_start_out = false;
  {
    absl::MutexLock lock(&mu_);
    for (; made_by > 0; --made_by) {  // to step 0 at most: the initial weights
      const v1::Round* round = nullptr;
      for (const auto& r : rounds_) {
        if (r.round_id() == made_by) round = &r;  // round ids are global_step + 1
      }
      if (round == nullptr && made_by == options_.initial_global_step) {
        // The step this coordinator started at: the round that made it is
        // gone with the old process; the peers it knew stand in for it, but
        // not those that said they failed it (they hold the step before's
        // weights), unless none of the others can say.
        for (const std::string& id : options_.members_at_start) {
          if (disowned_.contains(id)) continue;
          (failed_start_round_.count(id) > 0 ? failed_at_start : eligible).push_back(id);
        }
        silent_members_at_start_out = clock_->Now() > started_ + options_.report_ttl;
      }
      if (round == nullptr) break;
      eligible.clear();
      // Members that failed the round do not count, nor, once the round is
      // past its deadline and the report TTL, those that never said.
      const bool silent_ones_out =
          clock_->Now() > absl::FromUnixMillis(round->deadline_unix_ms()) + options_.report_ttl;
      if (!round->audit_failed()) {
        for (const auto& m : round->members()) {
          if (m.outcome() == v1::ROUND_FAILED ||
              (m.outcome() == v1::ROUND_PENDING && silent_ones_out) ||
              disowned_.contains(m.peer_id())) {
            continue;
          }
          eligible.push_back(m.peer_id());
        }
      }
      if (!eligible.empty()) break;
    }
    for (const auto* ids : {&eligible, &failed_at_start}) {
      for (const std::string& id : *ids) {
        if (departed_.contains(id)) departed.insert(id);
      }
    }
  }
  if (eligible.empty() && made_by == 0 && step > 0) {
    out.set_initial(true);
    out.set_why(absl::StrCat("nobody applied a step up to ", step,
                             ": the weights are the run's initial ones"));
    return out;
  }
  if (eligible.empty() && failed_at_start.empty()) {
    out.set_why(absl::StrCat("no round that made step ", step,
                             " (or a step before it that nobody applied) is kept"));
    return out;
  }
  const std::map<std::string, std::string> votes = hashes_.VotesFor(made_by);
  // A member that applied the step and departed before reporting its hash
  // (it died in between) has nothing more to say about it; nor, past
  // report_ttl, has a peer known at the start that never said (one that is
  // downloading the step's state cannot).
  auto drop_unheard = [&](std::vector<std::string>* ids) {
    ids->erase(std::remove_if(ids->begin(), ids->end(),
                              [&](const std::string& id) {
                                return (departed.count(id) > 0 || silent_members_at_start_out) &&
                                       votes.count(id) == 0;
                              }),
               ids->end());
  };
  drop_unheard(&eligible);
  if (eligible.empty()) {
    // Every known peer that did not fail the start step's round failed it
    // or departed unheard: those that failed it are all that is left to say.
    eligible.swap(failed_at_start);
    drop_unheard(&eligible);
  }
  if (eligible.empty()) {
    out.set_why(absl::StrCat("every member that applied step ", made_by,
                             " departed before reporting its hash"));
    return out;
  }
  out.set_eligible(eligible.size());
  std::map<std::string, uint32_t> counts;
  for (const std::string& id : eligible) {
    auto it = votes.find(id);
    if (it != votes.end() && ++counts[it->second] > out.votes()) {
      out.set_votes(counts[it->second]);
      out.set_hash(it->second);
    }
  }
  out.set_confirmed(2 * out.votes() > out.eligible());
  if (!out.confirmed()) {
    out.set_why(absl::StrCat(out.votes(), " of the ", out.eligible(),
                             " members that applied step ", made_by,
                             " reported the same hash of it"));
  }
  return out;
}

void RoundPlanner::RecentIds::Add(const std::string& id) {
  if (!added_.emplace(id, next_).second) return;
  order_.emplace(next_++, id);
  if (order_.size() > capacity_) {
    added_.erase(order_.begin()->second);
    order_.erase(order_.begin());
  }
}

void RoundPlanner::RecentIds::Remove(const std::string& id) {
  auto it = added_.find(id);
  if (it == added_.end()) return;
  order_.erase(it->second);
  added_.erase(it);
}

void RoundPlanner::Disown(const std::string& peer_id) {
  hashes_.Forget(peer_id);
  absl::MutexLock lock(&mu_);
  disowned_.Add(peer_id);
}

void RoundPlanner::Forget(const std::string& peer_id, bool hashes) {
  if (hashes) hashes_.Forget(peer_id);
  absl::MutexLock lock(&mu_);
  reports_.erase(peer_id);
  if (hashes) {
    departed_.Remove(peer_id);  // a new incarnation: it is back
  } else {
    departed_.Add(peer_id);
  }

  // A member removed before it said how its rounds ended did not apply
  // them (it would have said so before leaving).
  const absl::Time now = clock_->Now();
  for (auto& r : rounds_) {
    for (auto& m : *r.mutable_members()) {
      if (m.peer_id() == peer_id && m.outcome() == v1::ROUND_PENDING) {
        m.set_outcome(v1::ROUND_FAILED);
        ResolveLocked(&r, now);
      }
    }
  }
}

}  // namespace dd::coordinator
