#include "trainer/averaging/round_record.h"

#include "gtest/gtest.h"

namespace dd::averaging {
namespace {

TEST(RoundRecord, CountsPerMemberAndKeepsTheNewestEventsInOrder) {
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  RoundRecord record(/*round_id=*/7, /*members=*/3, t0, /*capacity=*/4);
  for (uint32_t p = 0; p < 3; ++p) record.Add(RoundEvent::kPartSent, 1, p, t0 + absl::Milliseconds(p));
  record.Add(RoundEvent::kPartAnswered, 1, 0, t0 + absl::Milliseconds(50));
  record.Add(RoundEvent::kNotRegisteredYet, 2, 0, t0 + absl::Milliseconds(60));
  record.Add(RoundEvent::kReducerFailed, 2, 0, t0 + absl::Seconds(20), "deadline exceeded");
  EXPECT_EQ(record.events_recorded(), 6u);
  auto entries = record.Entries();
  ASSERT_EQ(entries.size(), 4u);  // the oldest two fell out of the ring
  EXPECT_EQ(entries.front().seq, 3u);
  EXPECT_EQ(entries.back().seq, 6u);
  EXPECT_EQ(entries.back().event, RoundEvent::kReducerFailed);
  EXPECT_EQ(entries.back().at, absl::Seconds(20));
  const std::string dump = record.Dump();
  // The counts cover the whole round, not only the events kept.
  EXPECT_NE(dump.find("member 1: 3 parts sent, 1 answered (last at 0.050s)"), std::string::npos)
      << dump;
  EXPECT_NE(dump.find("member 2: 0 parts sent, 0 answered (last at 0.000s), 1 retries before it "
                      "knew the round, FAILED"),
            std::string::npos)
      << dump;
  EXPECT_NE(dump.find("#6 20.000s reducer failed member 2 part 0: deadline exceeded"),
            std::string::npos)
      << dump;
  EXPECT_EQ(dump.find("member 0:"), std::string::npos) << dump;  // never sent to
}

}  // namespace
}  // namespace dd::averaging
