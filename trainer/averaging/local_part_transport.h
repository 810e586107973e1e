// LocalPartTransport: PartTransport between members in one process. A part
// is handed straight to the ReducerRegistry registered under its address,
// with the same checks and codes as over gRPC, and deadlines enforced by a
// timer thread. Faults for tests: a member can be cut off (its parts are
// never delivered and time out, as to a dead host) or refuse connections
// (UNAVAILABLE at once, as a closed port).
#ifndef TRAINER_AVERAGING_LOCAL_PART_TRANSPORT_H_
#define TRAINER_AVERAGING_LOCAL_PART_TRANSPORT_H_

#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "trainer/averaging/part_transport.h"
#include "trainer/averaging/reducer_registry.h"

namespace dd::averaging {

class LocalPartTransport final : public PartTransport {
 public:
  LocalPartTransport();
  // Answers every part still unanswered with UNAVAILABLE.
  ~LocalPartTransport() override;

  // Parts sent to `address` go to `registry` (which must outlive them).
  void Attach(const std::string& address, ReducerRegistry* registry);
  // Parts to `address` vanish (answered DEADLINE_EXCEEDED at their deadline).
  void Cut(const std::string& address);
  // Parts to `address` are refused at once (UNAVAILABLE).
  void Refuse(const std::string& address);
  // Parts sent so far, to any address.
  uint64_t parts_sent() const;

  // PartTransport.
  void Send(const std::string& address, const v1::ReducePartRequest* request,
            v1::ReducePartResponse* response, absl::Time deadline, Done done) override;

 private:
  // One part on its way: the registry works on the transport's own copies,
  // so a part whose deadline passed can be answered while the registry
  // still holds it.
  struct Call {
    v1::ReducePartRequest request;
    v1::ReducePartResponse response;
    v1::ReducePartResponse* caller_response;
    Done done;
    absl::Time deadline;
    absl::Mutex mu;
    bool answered ABSL_GUARDED_BY(mu) = false;
  };
  // Answers `call` once: the first of the reducer and the deadline wins.
  static void Answer(const std::shared_ptr<Call>& call, const absl::Status& status);
  // Answers calls whose deadline passed, until the transport ends.
  void ExpireCalls();

  mutable absl::Mutex mu_;
  std::map<std::string, ReducerRegistry*> registries_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> cut_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> refused_ ABSL_GUARDED_BY(mu_);
  std::multimap<absl::Time, std::shared_ptr<Call>> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t parts_sent_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  std::thread expirer_;  // last, so it starts last
};

}  // namespace dd::averaging

#endif  // TRAINER_AVERAGING_LOCAL_PART_TRANSPORT_H_
