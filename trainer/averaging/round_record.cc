#include "trainer/averaging/round_record.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dd::averaging {

const char* RoundEventName(RoundEvent event) {
  switch (event) {
    case RoundEvent::kPartSent: return "sent";
    case RoundEvent::kPartAnswered: return "answered";
    case RoundEvent::kNotRegisteredYet: return "not registered yet";
    case RoundEvent::kReducerFailed: return "reducer failed";
    case RoundEvent::kSendersExcluded: return "senders excluded";
    case RoundEvent::kDeadline: return "deadline";
  }
  return "?";
}

RoundRecord::RoundRecord(uint64_t round_id, uint32_t members, absl::Time start, size_t capacity)
    : round_id_(round_id), start_(start), capacity_(std::max<size_t>(1, capacity)) {
  members_.resize(members);
}

void RoundRecord::Add(RoundEvent event, int member, uint32_t part, absl::Time now,
                      std::string detail) {
  absl::MutexLock lock(&mu_);
  const absl::Duration at = now - start_;
  if (member >= 0 && static_cast<size_t>(member) < members_.size()) {
    MemberCounts& m = members_[member];
    switch (event) {
      case RoundEvent::kPartSent: ++m.sent; break;
      case RoundEvent::kPartAnswered:
        ++m.answered;
        m.last_answer = at;
        break;
      case RoundEvent::kNotRegisteredYet: ++m.not_registered; break;
      case RoundEvent::kReducerFailed: m.failed = true; break;
      default: break;
    }
  }
  entries_.push_back({++seq_, at, event, member, part, std::move(detail)});
  if (entries_.size() > capacity_) entries_.pop_front();
}

std::vector<RoundRecord::Entry> RoundRecord::Entries() const {
  absl::MutexLock lock(&mu_);
  return std::vector<Entry>(entries_.begin(), entries_.end());
}

uint64_t RoundRecord::events_recorded() const {
  absl::MutexLock lock(&mu_);
  return seq_;
}

std::string RoundRecord::Dump(size_t max_events) const {
  absl::MutexLock lock(&mu_);
  std::string out = absl::StrCat("round ", round_id_, ": ", seq_, " events\n");
  for (size_t i = 0; i < members_.size(); ++i) {
    const MemberCounts& m = members_[i];
    if (m.sent == 0 && !m.failed) continue;
    absl::StrAppendFormat(&out,
                          "  member %d: %u parts sent, %u answered (last at %.3fs), %u retries "
                          "before it knew the round%s\n",
                          i, m.sent, m.answered, absl::ToDoubleSeconds(m.last_answer),
                          m.not_registered, m.failed ? ", FAILED" : "");
  }
  const size_t from = entries_.size() > max_events ? entries_.size() - max_events : 0;
  for (size_t i = from; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    absl::StrAppendFormat(&out, "  #%d %.3fs %s member %d part %u%s%s\n", e.seq,
                          absl::ToDoubleSeconds(e.at), RoundEventName(e.event), e.member, e.part,
                          e.detail.empty() ? "" : ": ", e.detail);
  }
  return out;
}

}  // namespace dd::averaging
