#include "trainer/averaging/send_schedule.h"

#include <algorithm>

namespace dd::averaging {

SendSchedule::SendSchedule(SendScheduleOptions options, std::vector<RemoteSpanPlan> remotes,
                           uint32_t own_parts)
    : options_(options), own_parts_(own_parts) {
  for (const RemoteSpanPlan& plan : remotes) {
    if (plan.num_parts == 0) continue;
    Remote r;
    r.plan = plan;
    remotes_.push_back(r);
  }
}

SendSchedule::Remote* SendSchedule::Find(uint32_t member) {
  for (Remote& r : remotes_) {
    if (r.plan.member == member) return &r;
  }
  return nullptr;
}

const SendSchedule::Remote* SendSchedule::Find(uint32_t member) const {
  return const_cast<SendSchedule*>(this)->Find(member);
}

bool SendSchedule::UnderCap(absl::Time now) const {
  if (options_.max_send_mbps <= 0) return true;
  const double allowed =
      absl::ToDoubleSeconds(now - options_.start) * options_.max_send_mbps * 1e6 / 8;
  return static_cast<double>(bytes_sent_) <= allowed;
}

void SendSchedule::Launch(Remote& r, absl::Time now) {
  if (!r.confirmed && r.in_flight == 0) r.probe_sent = now;
  r.in_flight++;
}

std::vector<PartRef> SendSchedule::TakeSends(absl::Time now) {
  std::vector<PartRef> sends;
  if (past_deadline_) return sends;
  const bool capped = options_.max_send_mbps > 0;
  auto room = [&] { return !(capped && !sends.empty()) && UnderCap(now); };
  for (auto it = retries_.begin(); it != retries_.end() && room();) {
    if (it->due > now) {
      ++it;
      continue;
    }
    // The part counted in flight all along (a window must not open for
    // new parts while the remote has not confirmed the round).
    Remote& r = remotes_[it->remote];
    if (!r.confirmed) r.probe_sent = now;
    sends.push_back({r.plan.member, it->part});
    it = retries_.erase(it);
  }
  for (Remote& r : remotes_) {
    if (!r.confirmed && r.in_flight > 0 && now - r.probe_sent > options_.probe_confirm) {
      r.confirmed = true;
    }
    const uint32_t window = r.confirmed ? static_cast<uint32_t>(options_.parts_in_flight) : 1u;
    while (!r.failed && r.next_part < r.plan.num_parts && r.in_flight < window && room()) {
      Launch(r, now);
      sends.push_back({r.plan.member, r.next_part++});
    }
  }
  return sends;
}

void SendSchedule::RecordSent(uint64_t bytes) { bytes_sent_ += bytes; }

std::pair<uint32_t, uint32_t> SendSchedule::TakeOwnParts() {
  uint32_t target = own_parts_;
  for (const Remote& r : remotes_) {
    if (r.failed || r.next_part >= r.plan.num_parts) continue;
    const uint32_t alongside = static_cast<uint32_t>(static_cast<double>(r.next_part) /
                                                     r.plan.num_parts * own_parts_);
    target = std::min(target, alongside + 2 * static_cast<uint32_t>(options_.parts_in_flight));
  }
  target = std::min(target, own_parts_);
  if (target <= own_next_) return {own_next_, own_next_};
  std::pair<uint32_t, uint32_t> range{own_next_, target};
  own_next_ = target;
  return range;
}

bool SendSchedule::OnAnswer(PartRef part, Answer answer, absl::Time now) {
  Remote* r = Find(part.member);
  if (r == nullptr || r->in_flight == 0) return false;
  const size_t index = static_cast<size_t>(r - remotes_.data());
  if (answer != Answer::kNotRegistered) r->confirmed = true;
  if (answer == Answer::kNotRegistered && !r->failed && !past_deadline_ &&
      now < std::min(options_.deadline, options_.start + options_.reducer_timeout)) {
    // Stays in flight until it is sent again; nothing of it is on the wire.
    const int64_t delay_ms = std::min<int64_t>(500, int64_t{10} << std::min(r->not_found++, 6));
    retries_.push_back({now + absl::Milliseconds(delay_ms), index, part.part});
    if (!r->confirmed) r->probe_sent = absl::InfiniteFuture();
    return false;
  }
  r->in_flight--;
  r->done_parts++;
  if (answer == Answer::kAnswered) return false;
  const bool newly = !r->failed;
  r->failed = true;
  DropRetries(index);
  return newly;
}

void SendSchedule::DropRetries(size_t index) {
  for (auto it = retries_.begin(); it != retries_.end();) {
    if (it->remote != index) {
      ++it;
      continue;
    }
    remotes_[index].in_flight--;
    it = retries_.erase(it);
  }
}

bool SendSchedule::PassDeadline() {
  if (past_deadline_) return false;
  past_deadline_ = true;
  for (size_t i = 0; i < remotes_.size(); ++i) {
    remotes_[i].failed = true;
    DropRetries(i);
  }
  return true;
}

bool SendSchedule::RemotesDone() const {
  for (const Remote& r : remotes_) {
    if (r.in_flight > 0) return false;
    if (!r.failed && r.done_parts < r.plan.num_parts) return false;
  }
  return true;
}

bool SendSchedule::failed(uint32_t member) const {
  const Remote* r = Find(member);
  return r != nullptr && r->failed;
}

bool SendSchedule::any_failed() const {
  return std::any_of(remotes_.begin(), remotes_.end(), [](const Remote& r) { return r.failed; });
}

uint32_t SendSchedule::in_flight(uint32_t member) const {
  const Remote* r = Find(member);
  return r == nullptr ? 0 : r->in_flight;
}

}  // namespace dd::averaging
