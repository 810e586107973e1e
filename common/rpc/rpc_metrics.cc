#include "common/rpc/rpc_metrics.h"

#include <string>

#include "absl/time/clock.h"

namespace dd {
namespace {

using grpc::experimental::InterceptionHookPoints;
using metrics::Counter;
using metrics::Family;
using metrics::Histogram;

// Method names come from clients (an unknown one still reaches us), so they
// are cut to a bounded length; the families bound the number of series.
constexpr size_t kMaxNameLength = 128;

struct RpcFamilies {
  Family<Counter>* started;
  Family<Counter>* handled;
  Family<Histogram>* seconds;
  Family<Counter>* received;
  Family<Counter>* sent;
};

const char* TypeName(grpc::experimental::ServerRpcInfo::Type type) {
  using Type = grpc::experimental::ServerRpcInfo::Type;
  switch (type) {
    case Type::UNARY:
      return "unary";
    case Type::CLIENT_STREAMING:
      return "client_stream";
    case Type::SERVER_STREAMING:
      return "server_stream";
    case Type::BIDI_STREAMING:
      return "bidi_stream";
  }
  return "unknown";
}

const char* CodeName(grpc::StatusCode code) {
  static const char* kNames[] = {"OK",
                                 "Canceled",
                                 "Unknown",
                                 "InvalidArgument",
                                 "DeadlineExceeded",
                                 "NotFound",
                                 "AlreadyExists",
                                 "PermissionDenied",
                                 "ResourceExhausted",
                                 "FailedPrecondition",
                                 "Aborted",
                                 "OutOfRange",
                                 "Unimplemented",
                                 "Internal",
                                 "Unavailable",
                                 "DataLoss",
                                 "Unauthenticated"};
  int i = static_cast<int>(code);
  return i >= 0 && i <= 16 ? kNames[i] : "Unknown";
}

class RpcMetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(grpc::experimental::ServerRpcInfo* info, const RpcFamilies* families)
      : families_(families), start_(absl::Now()) {
    std::string method = info->method() != nullptr ? info->method() : "";
    if (method.size() > kMaxNameLength) method.resize(kMaxNameLength);
    // "/package.Service/Method"
    size_t slash = method.rfind('/');
    std::string service = slash != std::string::npos && slash > 0 ? method.substr(1, slash - 1) : "";
    std::string name = slash != std::string::npos ? method.substr(slash + 1) : method;
    labels_ = {service, name, TypeName(info->type())};
    // One lookup per series per call; messages of a stream count without one.
    families_->started->WithLabels(labels_)->Increment();
    received_ = families_->received->WithLabels(labels_);
    sent_ = families_->sent->WithLabels(labels_);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE)) {
      received_->Increment();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      sent_->Increment();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      metrics::LabelValues with_code = labels_;
      with_code.push_back(CodeName(methods->GetSendStatus().error_code()));
      families_->handled->WithLabels(with_code)->Increment();
      families_->seconds->WithLabels(labels_)->Observe(absl::ToDoubleSeconds(absl::Now() - start_));
    }
    methods->Proceed();
  }

 private:
  const RpcFamilies* const families_;
  const absl::Time start_;
  metrics::LabelValues labels_;
  Counter* received_ = nullptr;
  Counter* sent_ = nullptr;
};

class RpcMetricsFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcMetricsFactory(metrics::MetricsRegistry* registry) {
    const std::vector<std::string> labels = {"grpc_service", "grpc_method", "grpc_type"};
    std::vector<std::string> with_code = labels;
    with_code.push_back("grpc_code");
    families_.started = registry->AddCounter("grpc_server_started_total",
                                             "RPCs started on the server.", labels);
    families_.handled = registry->AddCounter(
        "grpc_server_handled_total", "RPCs completed on the server, by status code.", with_code);
    families_.seconds = registry->AddHistogram(
        "grpc_server_handling_seconds", "Time from an RPC's start to its status.",
        metrics::ExponentialBuckets(0.0005, 4, 11), labels);
    families_.received = registry->AddCounter("grpc_server_msg_received_total",
                                              "Request messages received.", labels);
    families_.sent = registry->AddCounter("grpc_server_msg_sent_total",
                                          "Response messages sent.", labels);
  }

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RpcMetricsInterceptor(info, &families_);
  }

 private:
  RpcFamilies families_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeRpcMetricsInterceptor(
    metrics::MetricsRegistry* registry) {
  return std::make_unique<RpcMetricsFactory>(registry);
}

}  // namespace dd
