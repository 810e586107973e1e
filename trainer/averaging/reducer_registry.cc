#include "trainer/averaging/reducer_registry.h"

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
                                    std::vector<double> weights) {
  std::vector<HeldPart> ready;
  {
    absl::MutexLock lock(&mu_);
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
    reducer = std::move(it->second.reducer);
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
    done(absl::PermissionDeniedError(absl::StrCat("the credential of peer ", caller.peer_id,
                                                  " cannot send parts as ",
                                                  request->sender_peer_id())));
    return;
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
        response->set_total_weight((*outcome)->total_weight);
        done(absl::OkStatus());
      });
}

}  // namespace dd::averaging
