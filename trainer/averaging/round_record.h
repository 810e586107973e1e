// RoundRecord: what one member saw of one butterfly round, event by event,
// as c10d's flight recorder keeps the recent collectives: a failed or slow
// round writes it to the log, so it says which member stalled and where
// (parts sent but never answered, a reducer that did not know the round, a
// sender excluded) instead of only "the round failed".
//
// Bounded: per member counters for the whole round, and the events
// themselves in a ring of the newest `capacity`. Thread-safe. Pure C++.
#ifndef TRAINER_AVERAGING_ROUND_RECORD_H_
#define TRAINER_AVERAGING_ROUND_RECORD_H_

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace dd::averaging {

enum class RoundEvent {
  kPartSent,          // a part of `member`'s span went to it
  kPartAnswered,      // ... and its mean came back
  kNotRegisteredYet,  // the reducer did not know the round yet (retried)
  kReducerFailed,     // the reducer failed or timed out: own values kept
  kSendersExcluded,   // this member's reducer stopped waiting for senders
  kDeadline,          // the round's deadline passed
};
const char* RoundEventName(RoundEvent event);

class RoundRecord {
 public:
  struct Entry {
    uint64_t seq = 0;         // 1, 2, ... in the order recorded
    absl::Duration at;        // since the round began
    RoundEvent event = RoundEvent::kPartSent;
    int member = -1;          // the other member concerned (-1: none)
    uint32_t part = 0;
    std::string detail;       // an error message, a count
  };

  RoundRecord(uint64_t round_id, uint32_t members, absl::Time start, size_t capacity = 1024);

  void Add(RoundEvent event, int member, uint32_t part, absl::Time now, std::string detail = "");

  // The newest events (at most `capacity`), oldest first.
  std::vector<Entry> Entries() const;
  uint64_t events_recorded() const;

  // One line per member that was sent to: parts sent, answered, retried,
  // whether it failed, and when it last answered; then the newest
  // `max_events` events. For the log.
  std::string Dump(size_t max_events = 32) const;

 private:
  struct MemberCounts {
    uint32_t sent = 0, answered = 0, not_registered = 0;
    bool failed = false;
    absl::Duration last_answer = absl::ZeroDuration();
  };

  // Fixed after construction.
  const uint64_t round_id_;
  const absl::Time start_;
  const size_t capacity_;

  mutable absl::Mutex mu_;
  std::deque<Entry> entries_ ABSL_GUARDED_BY(mu_);
  uint64_t seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<MemberCounts> members_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dd::averaging

#endif  // TRAINER_AVERAGING_ROUND_RECORD_H_
