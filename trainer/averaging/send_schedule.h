// SendSchedule: which parts one member of a butterfly round sends when, as
// pure logic (no gRPC, no clock: the caller passes the time), so windows,
// retries, the upload cap and the deadline are tested without servers.
//
// The rules:
// - Every other member with a non-empty span is a remote; its span's parts
//   go in order, at most `parts_in_flight` unanswered at a time.
// - Until a remote has answered once it may not know the round yet: one part
//   at a time, so a NOT_FOUND wastes one part, not a window. NOT_FOUND comes
//   back at once, so a probe still unanswered after `probe_confirm` means
//   the remote has the round, and the window opens.
// - A NOT_FOUND part is sent again after 10 ms, doubling up to 500 ms (a
//   late member is not flooded), until start + reducer_timeout or the
//   deadline; after that the remote counts as failed.
// - Any other error fails the remote: the rest of its span is not sent
//   (the member keeps its own values there).
// - With an upload cap, a part is taken only while the bytes sent so far
//   are within cap × time since start.
// - This member's own parts go into its own reducer just ahead of its
//   sending (all members send their parts in the same order): up to two
//   windows ahead of the slowest remote still being sent to.
// - At the deadline nothing more is sent and every remote is given up.
//
// Not thread-safe: the caller serialises calls (ButterflyAllReduce holds its
// round's mutex).
#ifndef TRAINER_AVERAGING_SEND_SCHEDULE_H_
#define TRAINER_AVERAGING_SEND_SCHEDULE_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/time/time.h"

namespace dd::averaging {

struct SendScheduleOptions {
  int parts_in_flight = 4;  // per remote, once it has confirmed the round
  absl::Time start;
  absl::Duration reducer_timeout = absl::Seconds(20);
  absl::Time deadline = absl::InfiniteFuture();
  double max_send_mbps = 0;  // 0: no cap
  absl::Duration probe_confirm = absl::Milliseconds(50);
};

// One other member's span, as the schedule sees it.
struct RemoteSpanPlan {
  uint32_t member = 0;
  uint32_t num_parts = 0;
};

struct PartRef {
  uint32_t member = 0;
  uint32_t part = 0;
  bool operator==(const PartRef& o) const { return member == o.member && part == o.part; }
};

class SendSchedule {
 public:
  enum class Answer {
    kAnswered,       // the reducer answered the part (with its mean)
    kNotRegistered,  // NOT_FOUND: the reducer does not know the round yet
    kFailed,         // anything else: the reducer is given up
  };

  SendSchedule(SendScheduleOptions options, std::vector<RemoteSpanPlan> remotes,
               uint32_t own_parts);

  // The parts to send now, in order, each in flight from now on: retries
  // that are due first, then new parts within every remote's window. With
  // an upload cap at most one part per call: its size is known only once it
  // is encoded, so the caller calls RecordSent and asks again.
  std::vector<PartRef> TakeSends(absl::Time now);
  // The encoded size of a part taken by TakeSends.
  void RecordSent(uint64_t bytes);

  // The own parts to contribute now, [first, second): empty when none.
  std::pair<uint32_t, uint32_t> TakeOwnParts();

  // The answer to a part in flight. Returns true when it gave the remote up
  // (the first time only), so the caller can say so once.
  bool OnAnswer(PartRef part, Answer answer, absl::Time now);

  // The round's deadline passed: nothing more is taken and every remote is
  // given up (answers still due are counted as they come). True the first
  // time only.
  bool PassDeadline();

  // Every remote part was answered or given up, and none is in flight.
  bool RemotesDone() const;

  bool failed(uint32_t member) const;
  bool any_failed() const;
  bool past_deadline() const { return past_deadline_; }
  uint64_t bytes_sent() const { return bytes_sent_; }
  // Parts of `member` sent and unanswered, or waiting to be sent again.
  uint32_t in_flight(uint32_t member) const;

 private:
  struct Remote {
    RemoteSpanPlan plan;
    uint32_t next_part = 0;
    uint32_t in_flight = 0;  // sent and unanswered, or waiting to be sent again
    uint32_t done_parts = 0;
    bool failed = false;
    bool confirmed = false;
    absl::Time probe_sent = absl::InfiniteFuture();
    int not_found = 0;  // NOT_FOUND answers so far: the retry delay doubles
  };
  struct Retry {
    absl::Time due;
    size_t remote;
    uint32_t part;
  };

  Remote* Find(uint32_t member);
  const Remote* Find(uint32_t member) const;
  bool UnderCap(absl::Time now) const;
  void Launch(Remote& r, absl::Time now);
  // Forgets the retries of remotes_[index] (given up).
  void DropRetries(size_t index);

  // Fixed after construction.
  const SendScheduleOptions options_;
  const uint32_t own_parts_;

  std::vector<Remote> remotes_;
  std::vector<Retry> retries_;  // NOT_FOUND parts waiting to be sent again
  uint32_t own_next_ = 0;
  uint64_t bytes_sent_ = 0;
  bool past_deadline_ = false;
};

}  // namespace dd::averaging

#endif  // TRAINER_AVERAGING_SEND_SCHEDULE_H_
