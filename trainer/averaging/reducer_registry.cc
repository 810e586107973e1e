#include "trainer/averaging/reducer_registry.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace dd::averaging {
namespace {

absl::Status RoundNotKnown(uint64_t round_id) {
  return absl::NotFoundError(absl::StrCat("round ", round_id, " is not known here (yet)"));
}

absl::Status RoundOver(uint64_t round_id) {
  return absl::FailedPreconditionError(absl::StrCat("round ", round_id, " is over"));
}

}  // namespace

ReducerRegistry::ReducerRegistry(absl::Duration early_part_wait, size_t max_held_bytes)
    : early_part_wait_(early_part_wait),
      max_held_bytes_(max_held_bytes),
      expirer_([this] { ExpireHeldParts(); }) {}

ReducerRegistry::~ReducerRegistry() {
  std::deque<HeldPart> held;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    held.swap(held_);
  }
  expirer_.join();
  for (const HeldPart& h : held) h.done(absl::UnavailableError("the member is shutting down"));
}

void ReducerRegistry::ExpireHeldParts() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    absl::Time now = absl::Now();
    std::vector<HeldPart> expired;
    while (!held_.empty() && held_.front().expires <= now) {
      held_bytes_ -= held_.front().bytes;
      expired.push_back(std::move(held_.front()));
      held_.pop_front();
    }
    if (!expired.empty()) {
      mu_.Unlock();  // answered outside the lock, like every part here
      for (const HeldPart& h : expired) h.done(RoundNotKnown(h.request->round_id()));
      mu_.Lock();
      continue;
    }
    absl::Time next = held_.empty() ? now + absl::Seconds(1) : held_.front().expires;
    // Every part waits the same time, so a part held meanwhile never
    // expires before `next`: only the destructor needs to wake this early.
    mu_.AwaitWithDeadline(absl::Condition(&stopping_), next);
  }
}

void ReducerRegistry::RegisterRound(uint64_t round_id, std::vector<std::string> peer_ids,
                                    uint32_t my_index, std::shared_ptr<SpanReducer> reducer,
                                    std::vector<double> weights, std::vector<AuditDuty> audits) {
  std::vector<HeldPart> ready;
  {
    absl::MutexLock lock(&mu_);
    // Audits of old rounds whose copies nobody took (the round failed
    // before its audit) are dropped.
    while (!audits_.empty() && audits_.begin()->first.first + kFinishedRoundsKept < round_id) {
      audits_.erase(audits_.begin());
    }
    for (const AuditDuty& duty : audits) {
      AuditSlot& slot = audits_[{round_id, duty.span}];
      slot.peer_ids = peer_ids;
      slot.my_index = my_index;
      slot.assigned = weights;
      slot.duty = duty;
      slot.codec = reducer->options().codec;
      slot.copies.rows.assign(peer_ids.size(), {});
      slot.copies.weights.assign(peer_ids.size(), 0.0);
      slot.copies.given.assign(peer_ids.size(), false);
    }
    rounds_[round_id] = Round{std::move(peer_ids), my_index, std::move(reducer), std::move(weights)};
    for (auto it = held_.begin(); it != held_.end();) {
      if (it->request->round_id() != round_id) {
        ++it;
        continue;
      }
      held_bytes_ -= it->bytes;
      ready.push_back(std::move(*it));
      it = held_.erase(it);
    }
  }
  for (HeldPart& h : ready) Serve(h.request, h.response, std::move(h.done));
}

void ReducerRegistry::EndRound(uint64_t round_id) {
  std::shared_ptr<SpanReducer> reducer;
  {
    absl::MutexLock lock(&mu_);
    auto it = rounds_.find(round_id);
    if (it == rounds_.end()) return;
    reducer = it->second.reducer;
    if (reducer->options().keep_local_inputs) {
      revealable_.emplace_back(round_id, std::move(it->second));
      if (revealable_.size() > 2) revealable_.pop_front();
    }
    rounds_.erase(it);
    finished_.insert(round_id);
    finished_order_.push_back(round_id);
    if (finished_order_.size() > kFinishedRoundsKept) {
      finished_.erase(finished_order_.front());
      finished_order_.pop_front();
    }
  }
  reducer->Finish();
}

void ReducerRegistry::ReducePart(const v1::ReducePartRequest* request,
                                 v1::ReducePartResponse* response, Done done,
                                 const Caller& caller) {
  const uint64_t round_id = request->round_id();
  absl::Status refusal;  // stays OK for a held part
  if (!caller.may_use_peer_services()) {
    done(absl::PermissionDeniedError(
        "parts need the sender's peer credential; the run token or an invitation acts for no "
        "member"));
    return;
  }
  if (caller.is_peer() && caller.peer_id != request->sender_peer_id()) {
    done(absl::PermissionDeniedError(absl::StrCat(
        "the credential of peer ", caller.peer_id, " cannot send parts as ",
        absl::CHexEscape(absl::string_view(request->sender_peer_id()).substr(0, 64)),
        request->sender_peer_id().size() > 64 ? "..." : "")));
    return;
  }
  if (request->kind() == v1::REVEAL) {
    Reveal(request, response, std::move(done));
    return;
  }
  if (request->kind() == v1::AUDIT_COPY) {
    // Copies are taken until the audit is judged, which may be after this
    // member's own round ended.
    bool audited;
    {
      absl::MutexLock lock(&mu_);
      audited = audits_.count({round_id, request->span()}) > 0;
    }
    if (audited) {
      ServeAuditCopy(request, response, std::move(done));
      return;
    }
  }
  {
    absl::MutexLock lock(&mu_);
    if (rounds_.count(round_id) == 0) {
      const size_t bytes = request->ByteSizeLong();
      if (finished_.count(round_id)) {
        refusal = RoundOver(round_id);
      } else if (early_part_wait_ > absl::ZeroDuration() && !stopping_ &&
                 held_.size() < kMaxHeldParts && held_bytes_ + bytes <= max_held_bytes_) {
        // Answered by RegisterRound, ExpireHeldParts or the destructor.
        held_.push_back(
            {request, response, std::move(done), absl::Now() + early_part_wait_, bytes});
        held_bytes_ += bytes;
        return;
      } else if (early_part_wait_ > absl::ZeroDuration() && !stopping_) {
        refusal = absl::NotFoundError(absl::StrCat(
            RoundNotKnown(round_id).message(), "; not held: the parts held for unknown rounds are "
            "at their bound (", held_.size(), " parts, ", held_bytes_, " bytes); retry briefly"));
      } else {
        refusal = RoundNotKnown(round_id);
      }
    }
  }
  if (!refusal.ok()) {
    done(refusal);
    return;
  }
  Serve(request, response, std::move(done));
}

void ReducerRegistry::Serve(const v1::ReducePartRequest* request,
                            v1::ReducePartResponse* response, Done done) {
  if (request->kind() == v1::AUDIT_COPY) {
    ServeAuditCopy(request, response, std::move(done));
    return;
  }
  if (request->kind() != v1::REDUCE) {
    done(absl::InvalidArgumentError(absl::StrCat("unknown part kind ", request->kind())));
    return;
  }
  // Decided under the lock, answered outside it (as everywhere here: no
  // callback runs under this registry's lock).
  std::shared_ptr<SpanReducer> reducer;
  absl::Status refusal;
  double weight = request->weight();
  {
    absl::MutexLock lock(&mu_);
    auto it = rounds_.find(request->round_id());
    if (it == rounds_.end()) {  // ended in the meantime
      refusal = RoundOver(request->round_id());
    } else if (const Round& round = it->second;
               request->sender_index() >= round.peer_ids.size() ||
               round.peer_ids[request->sender_index()] != request->sender_peer_id() ||
               request->sender_index() == round.my_index) {
      refusal = absl::PermissionDeniedError(
          absl::StrCat("sender ", request->sender_peer_id(), " (index ", request->sender_index(),
                       ") is not another member of round ", request->round_id()));
    } else {
      reducer = round.reducer;
      // The round assigned each member its weight (the samples it
      // reported); a sender may give less (0 when its values were not
      // finite), never more.
      if (!round.weights.empty() && weight > round.weights[request->sender_index()]) {
        weight = round.weights[request->sender_index()];
      }
      if (request->span() != round.my_index) {
        refusal = absl::InvalidArgumentError(absl::StrCat(
            "this member reduces span ", round.my_index, ", not ", request->span()));
      }
    }
  }
  if (!refusal.ok()) {
    // A member naming the wrong span is excluded like any sender of bad data.
    if (reducer != nullptr) reducer->Exclude(request->sender_index());
    done(refusal);
    return;
  }
  const ReducerOptions& options = reducer->options();
  uint32_t sender = request->sender_index();
  auto reject = [&](const std::string& why) {
    reducer->Exclude(sender);
    done(absl::InvalidArgumentError(why + "; sender excluded from the round"));
  };
  if (static_cast<int>(options.codec) != request->codec()) {
    reject(absl::StrCat("codec ", request->codec(), " is not the round's codec ",
                        static_cast<int>(options.codec)));
    return;
  }
  // Bound the allocation before decoding anything.
  if (request->count() == 0 || request->count() > options.part_elements ||
      request->offset() >= options.span_length) {
    reject(absl::StrCat("part (offset ", request->offset(), ", count ", request->count(),
                        ") does not fit the span of ", options.span_length, " values"));
    return;
  }
  std::vector<float> values(request->count());
  absl::Status decoded =
      CodecFor(options.codec).Decode(request->data(), request->count(), values.data());
  if (!decoded.ok()) {
    reject(std::string(decoded.message()));
    return;
  }
  reducer->Contribute(
      sender, request->offset(), values.data(), values.size(), weight, absl::Now(),
      [response, sender, codec = options.codec, done = std::move(done)](
          absl::StatusOr<std::shared_ptr<const PartOutcome>> outcome) {
        if (!outcome.ok()) {
          done(outcome.status());
          return;
        }
        response->set_averaged((*outcome)->averaged);
        response->set_codec(static_cast<v1::Codec>(codec));
        bool delta = !(*outcome)->deltas.empty();
        response->set_delta(delta);
        response->set_data(delta ? (*outcome)->deltas[sender] : (*outcome)->encoded);
        response->set_contributors((*outcome)->contributors);
        for (uint32_t i : (*outcome)->contributor_indexes) response->add_contributor_indexes(i);
        response->set_total_weight((*outcome)->total_weight);
        done(absl::OkStatus());
      });
}

void ReducerRegistry::ServeAuditCopy(const v1::ReducePartRequest* request,
                                     v1::ReducePartResponse* response, Done done) {
  const uint32_t sender = request->sender_index();
  AuditDuty duty;
  CodecId codec;
  double weight = request->weight();
  {
    absl::MutexLock lock(&mu_);
    auto it = audits_.find({request->round_id(), request->span()});
    if (it == audits_.end()) {
      done(absl::PermissionDeniedError(absl::StrCat("this member audits no part of span ",
                                                    request->span(), " in round ",
                                                    request->round_id())));
      return;
    }
    const AuditSlot& slot = it->second;
    if (sender >= slot.peer_ids.size() || slot.peer_ids[sender] != request->sender_peer_id() ||
        sender == slot.my_index || sender == request->span()) {
      done(absl::PermissionDeniedError(absl::StrCat(
          "sender ", request->sender_peer_id(), " (index ", sender,
          ") is not a member that sends span ", request->span(), " to its reducer")));
      return;
    }
    if (slot.copies.given[sender]) {
      done(absl::InvalidArgumentError("a second copy of the audited part"));
      return;
    }
    duty = slot.duty;
    codec = slot.codec;
    if (!slot.assigned.empty()) weight = std::min(weight, slot.assigned[sender]);
  }
  if (request->offset() != duty.offset || request->count() != duty.count ||
      static_cast<int>(codec) != request->codec()) {
    done(absl::InvalidArgumentError(absl::StrCat(
        "the audited part is at offset ", duty.offset, " with ", duty.count, " values")));
    return;
  }
  if (!std::isfinite(weight) || weight < 0) {
    done(absl::InvalidArgumentError("weight must be finite and >= 0"));
    return;
  }
  std::vector<float> values(duty.count);
  if (absl::Status decoded = CodecFor(codec).Decode(request->data(), duty.count, values.data());
      !decoded.ok()) {
    done(decoded);
    return;
  }
  if (!AllFinite(values.data(), values.size())) {
    done(absl::InvalidArgumentError("non-finite values refused"));
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    auto it = audits_.find({request->round_id(), request->span()});
    if (it == audits_.end() || it->second.copies.given[sender]) {
      done(absl::FailedPreconditionError("the audit of this part is over"));
      return;
    }
    AuditCopies& copies = it->second.copies;
    copies.rows[sender] = std::move(values);
    copies.weights[sender] = weight;
    copies.given[sender] = true;
  }
  response->set_averaged(false);
  response->set_codec(request->codec());
  done(absl::OkStatus());
}

void ReducerRegistry::AddOwnAuditCopy(uint64_t round_id, uint32_t span, std::vector<float> values,
                                      double weight) {
  absl::MutexLock lock(&mu_);
  auto it = audits_.find({round_id, span});
  if (it == audits_.end()) return;
  AuditCopies& copies = it->second.copies;
  const uint32_t me = it->second.my_index;
  copies.rows[me] = std::move(values);
  copies.weights[me] = weight;
  copies.given[me] = true;
}

absl::StatusOr<AuditCopies> ReducerRegistry::TakeAuditCopies(uint64_t round_id, uint32_t span,
                                                             const std::vector<uint32_t>& senders,
                                                             absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  const auto key = std::make_pair(round_id, span);
  auto complete = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = audits_.find(key);
    if (it == audits_.end() || stopping_) return true;
    for (uint32_t s : senders) {
      if (s < it->second.copies.given.size() && !it->second.copies.given[s]) return false;
    }
    return true;
  };
  mu_.AwaitWithDeadline(absl::Condition(&complete), deadline);
  auto it = audits_.find(key);
  if (it == audits_.end()) {
    return absl::NotFoundError(absl::StrCat("no audit of span ", span, " in round ", round_id));
  }
  AuditCopies copies = std::move(it->second.copies);
  audits_.erase(it);
  return copies;
}

void ReducerRegistry::Reveal(const v1::ReducePartRequest* request,
                             v1::ReducePartResponse* response, Done done) {
  std::shared_ptr<SpanReducer> reducer;
  {
    absl::MutexLock lock(&mu_);
    const Round* round = nullptr;
    if (auto it = rounds_.find(request->round_id()); it != rounds_.end()) round = &it->second;
    for (const auto& [id, r] : revealable_) {
      if (id == request->round_id()) round = &r;
    }
    if (round == nullptr) {
      done(absl::NotFoundError(
          absl::StrCat("round ", request->round_id(), " is not kept here for audits")));
      return;
    }
    const uint32_t sender = request->sender_index();
    if (sender >= round->peer_ids.size() || round->peer_ids[sender] != request->sender_peer_id() ||
        sender == round->my_index) {
      done(absl::PermissionDeniedError(absl::StrCat(
          "only another member of round ", request->round_id(), " may audit its parts")));
      return;
    }
    reducer = round->reducer;
  }
  auto kept = reducer->LocalContribution(request->offset());
  if (!kept.ok()) {
    done(kept.status());
    return;
  }
  const std::vector<float>& values = kept->first;
  response->set_averaged(false);
  response->set_codec(v1::NONE);
  CodecFor(CodecId::kNone).Encode(values.data(), values.size(), response->mutable_data());
  response->set_total_weight(kept->second);
  done(absl::OkStatus());
}

void ScaleAveragedAnswerForTest(float factor, const v1::ReducePartRequest& request,
                                v1::ReducePartResponse* response) {
  if (request.kind() != v1::REDUCE || !response->averaged()) return;
  const Codec& codec = CodecFor(static_cast<CodecId>(response->codec()));
  std::vector<float> mean(request.count());
  if (!codec.Decode(response->data(), mean.size(), mean.data()).ok()) return;
  for (float& x : mean) x *= factor;
  codec.Encode(mean.data(), mean.size(), response->mutable_data());
}

}  // namespace dd::averaging
