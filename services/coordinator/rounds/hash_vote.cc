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
  // Judge every peer that voted for this step: peers report at different
  // moments, so one may be outvoted only after it reported.
  std::map<std::string, int> counts;
  for (const auto& [id, h] : step_votes) ++counts[h];
  std::string consensus;
  int best = 0;
  for (const auto& [h, n] : counts) {
    if (n > best) {
      best = n;
      consensus = h;
    }
  }
  for (const auto& [id, h] : step_votes) {
    if (h != consensus && best >= 2 && best > counts[h]) {
      outvoted_[id] = {step, consensus};
    } else if (h == consensus && best >= 2) {
      auto it = outvoted_.find(id);
      if (it != outvoted_.end() && it->second.first <= step) outvoted_.erase(it);
    }
  }
  while (votes_.size() > steps_kept_) votes_.erase(votes_.begin());  // step_votes may go
  Verdict verdict;
  if (auto it = outvoted_.find(peer); it != outvoted_.end()) {
    verdict.diverged = true;
    verdict.consensus = it->second.second;
  }
  return verdict;
}

std::map<std::string, std::string> HashVote::VotesFor(uint64_t step) {
  absl::MutexLock lock(&mu_);
  auto it = votes_.find(step);
  return it == votes_.end() ? std::map<std::string, std::string>{} : it->second;
}

void HashVote::Forget(const std::string& peer) {
  absl::MutexLock lock(&mu_);
  for (auto& [step, step_votes] : votes_) step_votes.erase(peer);
  outvoted_.erase(peer);
}

}  // namespace dd::coordinator
