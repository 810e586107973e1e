#include "trainer/averaging/averager_service.h"

#include "absl/strings/str_cat.h"

namespace dd::averaging {

void AveragerService::RegisterRound(uint64_t round_id, std::vector<std::string> peer_ids,
                                    uint32_t my_index, std::shared_ptr<SpanReducer> reducer) {
  absl::MutexLock lock(&mu_);
  rounds_[round_id] = Round{std::move(peer_ids), my_index, std::move(reducer)};
}

void AveragerService::EndRound(uint64_t round_id) {
  std::shared_ptr<SpanReducer> reducer;
  {
    absl::MutexLock lock(&mu_);
    auto it = rounds_.find(round_id);
    if (it == rounds_.end()) return;
    reducer = std::move(it->second.reducer);
    rounds_.erase(it);
    finished_.insert(round_id);
    finished_order_.push_back(round_id);
    if (finished_order_.size() > kFinishedRoundsKept) {
      finished_.erase(finished_order_.front());
      finished_order_.pop_front();
    }
  }
  reducer->Finish();
}

grpc::ServerUnaryReactor* AveragerService::ReducePart(grpc::CallbackServerContext* context,
                                                      const v1::ReducePartRequest* request,
                                                      v1::ReducePartResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto finish = [reactor](grpc::StatusCode code, const std::string& message) {
    reactor->Finish(grpc::Status(code, message));
  };
  std::shared_ptr<SpanReducer> reducer;
  {
    absl::MutexLock lock(&mu_);
    auto it = rounds_.find(request->round_id());
    if (it == rounds_.end()) {
      if (finished_.count(request->round_id())) {
        finish(grpc::StatusCode::FAILED_PRECONDITION,
               absl::StrCat("round ", request->round_id(), " is over"));
      } else {
        finish(grpc::StatusCode::NOT_FOUND,
               absl::StrCat("round ", request->round_id(), " is not known here (yet)"));
      }
      return reactor;
    }
    const Round& round = it->second;
    if (request->sender_index() >= round.peer_ids.size() ||
        round.peer_ids[request->sender_index()] != request->sender_peer_id() ||
        request->sender_index() == round.my_index) {
      finish(grpc::StatusCode::PERMISSION_DENIED,
             absl::StrCat("sender ", request->sender_peer_id(), " (index ",
                          request->sender_index(), ") is not another member of round ",
                          request->round_id()));
      return reactor;
    }
    reducer = round.reducer;
    if (request->span() != round.my_index) {
      reducer->Exclude(request->sender_index());
      finish(grpc::StatusCode::INVALID_ARGUMENT,
             absl::StrCat("this member reduces span ", round.my_index, ", not ", request->span()));
      return reactor;
    }
  }
  const ReducerOptions& options = reducer->options();
  uint32_t sender = request->sender_index();
  auto reject = [&](const std::string& why) {
    reducer->Exclude(sender);
    finish(grpc::StatusCode::INVALID_ARGUMENT, why + "; sender excluded from the round");
  };
  if (static_cast<int>(options.codec) != request->codec()) {
    reject(absl::StrCat("codec ", request->codec(), " is not the round's codec ",
                        static_cast<int>(options.codec)));
    return reactor;
  }
  // Bound the allocation before decoding anything.
  if (request->count() == 0 || request->count() > options.part_elements ||
      request->offset() >= options.span_length) {
    reject(absl::StrCat("part (offset ", request->offset(), ", count ", request->count(),
                        ") does not fit the span of ", options.span_length, " values"));
    return reactor;
  }
  std::vector<float> values(request->count());
  absl::Status decoded =
      CodecFor(options.codec).Decode(request->data(), request->count(), values.data());
  if (!decoded.ok()) {
    reject(std::string(decoded.message()));
    return reactor;
  }
  reducer->Contribute(
      sender, request->offset(), values.data(), values.size(), request->weight(), absl::Now(),
      [reactor, response, sender, codec = options.codec](
          absl::StatusOr<std::shared_ptr<const PartOutcome>> outcome) {
        if (!outcome.ok()) {
          reactor->Finish(grpc::Status(static_cast<grpc::StatusCode>(outcome.status().code()),
                                       std::string(outcome.status().message())));
          return;
        }
        response->set_averaged((*outcome)->averaged);
        response->set_codec(static_cast<v1::Codec>(codec));
        bool delta = !(*outcome)->deltas.empty();
        response->set_delta(delta);
        response->set_data(delta ? (*outcome)->deltas[sender] : (*outcome)->encoded);
        response->set_contributors((*outcome)->contributors);
        response->set_total_weight((*outcome)->total_weight);
        reactor->Finish(grpc::Status::OK);
      });
  return reactor;
}

}  // namespace dd::averaging
