#include "services/coordinator/rounds/hash_vote.h"

namespace dd::coordinator {

HashVote::Verdict HashVote::Record(const std::string& peer, uint64_t step,
                                   const std::string& hash) {
  absl::MutexLock lock(&mu_);
  if (!votes_.empty() && votes_.size() >= steps_kept_ && step < votes_.begin()->first) {
    return {};  // too old to judge
  }
  auto& step_votes = votes_[step];
  step_votes[peer] = hash;
  std::map<std::string, int> counts;
  for (const auto& [id, h] : step_votes) ++counts[h];
  while (votes_.size() > steps_kept_) votes_.erase(votes_.begin());  // step_votes may go
  Verdict verdict;
  int best = 0;
  for (const auto& [h, n] : counts) {
    if (n > best) {
      best = n;
      verdict.consensus = h;
    }
  }
  verdict.diverged = verdict.consensus != hash && best >= 2 && best > counts[hash];
  return verdict;
}

void HashVote::Forget(const std::string& peer) {
  absl::MutexLock lock(&mu_);
  for (auto& [step, step_votes] : votes_) step_votes.erase(peer);
}

}  // namespace dd::coordinator
