#include "common/time/clock.h"

namespace dd {
namespace {
class SystemClock : public Clock {
 public:
  absl::Time Now() override { return absl::Now(); }
};
}  // namespace

Clock* RealClock() {
  static Clock* clock = new SystemClock();
  return clock;
}

}  // namespace dd
