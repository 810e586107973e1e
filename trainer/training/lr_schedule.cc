#include "trainer/training/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace dd::training {

absl::StatusOr<LrSchedule> LrSchedule::Make(double base_lr, const LrScheduleOptions& o) {
  const std::string& n = o.name;
  if (n != "constant" && n != "constant_with_warmup" && n != "linear" && n != "cosine" &&
      n != "polynomial") {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown lr_scheduler \"", n,
        "\" (constant, constant_with_warmup, linear, cosine, polynomial)"));
  }
  if (o.warmup_steps < 0 || o.total_steps < 0 || !(base_lr >= 0) || !std::isfinite(base_lr)) {
    return absl::InvalidArgumentError("learning rate and step counts must not be negative");
  }
  if ((n == "linear" || n == "cosine" || n == "polynomial") && o.total_steps <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("lr_scheduler ", n, " needs max_steps"));
  }
  if (n == "polynomial" && o.poly_lr_end > base_lr) {
    return absl::InvalidArgumentError("polynomial lr_end must not exceed the learning rate");
  }
  LrSchedule s;
  s.base_lr_ = base_lr;
  s.o_ = o;
  return s;
}

double LrSchedule::At(int64_t step) const {
  const std::string& n = o_.name;
  const double warm = static_cast<double>(o_.warmup_steps);
  if (n == "constant") return base_lr_;
  if (step < o_.warmup_steps) return base_lr_ * step / std::max(1.0, warm);
  if (n == "constant_with_warmup") return base_lr_;
  const double total = static_cast<double>(o_.total_steps);
  if (n == "linear") {
    return base_lr_ * std::max(0.0, (total - step) / std::max(1.0, total - warm));
  }
  if (n == "cosine") {
    // Held at its end past total_steps (a collaboration's peer may train a
    // few steps past the nominal count), not back up the cosine.
    double progress = std::min(1.0, (step - warm) / std::max(1.0, total - warm));
    return base_lr_ * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * 2.0 * o_.cosine_cycles * progress)));
  }
  // polynomial
  if (step > o_.total_steps) return o_.poly_lr_end;
  double remaining = 1.0 - (step - warm) / std::max(1.0, total - warm);
  return (base_lr_ - o_.poly_lr_end) * std::pow(remaining, o_.poly_power) + o_.poly_lr_end;
}

}  // namespace dd::training
