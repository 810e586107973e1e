#include "trainer/averaging/local_part_transport.h"

#include <vector>

#include "absl/strings/str_cat.h"

namespace dd::averaging {

LocalPartTransport::LocalPartTransport() : expirer_([this] { ExpireCalls(); }) {}

LocalPartTransport::~LocalPartTransport() {
  std::multimap<absl::Time, std::shared_ptr<Call>> pending;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    pending.swap(pending_);
  }
  expirer_.join();
  for (auto& [deadline, call] : pending) {
    Answer(call, absl::UnavailableError("the transport is shutting down"));
  }
}

void LocalPartTransport::Attach(const std::string& address, ReducerRegistry* registry) {
  absl::MutexLock lock(&mu_);
  registries_[address] = registry;
}

void LocalPartTransport::Cut(const std::string& address) {
  absl::MutexLock lock(&mu_);
  cut_.insert(address);
}

void LocalPartTransport::Refuse(const std::string& address) {
  absl::MutexLock lock(&mu_);
  refused_.insert(address);
}

uint64_t LocalPartTransport::parts_sent() const {
  absl::MutexLock lock(&mu_);
  return parts_sent_;
}

void LocalPartTransport::Answer(const std::shared_ptr<Call>& call, const absl::Status& status) {
  {
    absl::MutexLock lock(&call->mu);
    if (call->answered) return;
    call->answered = true;
  }
  if (status.ok()) *call->caller_response = call->response;
  call->done(status);
}

void LocalPartTransport::ExpireCalls() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    const absl::Time now = absl::Now();
    std::vector<std::shared_ptr<Call>> expired;
    while (!pending_.empty() && pending_.begin()->first <= now) {
      expired.push_back(pending_.begin()->second);
      pending_.erase(pending_.begin());
    }
    // Answered calls leave (their deadline no longer matters).
    for (auto it = pending_.begin(); it != pending_.end();) {
      bool answered;
      {
        absl::MutexLock call_lock(&it->second->mu);
        answered = it->second->answered;
      }
      it = answered ? pending_.erase(it) : std::next(it);
    }
    if (!expired.empty()) {
      mu_.Unlock();  // answered outside the lock
      for (const auto& call : expired) {
        Answer(call, absl::DeadlineExceededError("no answer by the part's deadline"));
      }
      mu_.Lock();
      continue;
    }
    // Polled: a part sent meanwhile may have an earlier deadline.
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(5));
  }
}

void LocalPartTransport::Send(const std::string& address, const v1::ReducePartRequest* request,
                              v1::ReducePartResponse* response, absl::Time deadline, Done done) {
  auto call = std::make_shared<Call>();
  call->request = *request;
  call->caller_response = response;
  call->done = std::move(done);
  call->deadline = deadline;
  ReducerRegistry* registry = nullptr;
  bool refused = false, cut = false;
  {
    absl::MutexLock lock(&mu_);
    ++parts_sent_;
    auto it = registries_.find(address);
    refused = it == registries_.end() || refused_.count(address) > 0;
    cut = cut_.count(address) > 0;
    if (!refused) {
      registry = it->second;
      pending_.emplace(deadline, call);
    }
  }
  if (refused) {
    Answer(call, absl::UnavailableError(absl::StrCat("nothing listens at ", address)));
    return;
  }
  if (cut) return;  // only the deadline answers
  registry->ReducePart(&call->request, &call->response,
                       [call](const absl::Status& status) { Answer(call, status); });
}

}  // namespace dd::averaging
