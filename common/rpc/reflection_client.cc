#include "common/rpc/reflection_client.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/impl/codegen/rpc_method.h>
#include <grpcpp/support/sync_stream.h>

#include "absl/strings/str_cat.h"
#include "common/rpc/channel.h"
#include "common/status/grpc_status.h"

namespace dd {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::DescriptorPool;
using google::protobuf::Message;
using google::protobuf::MessageFactory;

constexpr char kMethod[] = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

// The reflection messages are compiled into libgrpc++_reflection, which the
// server side links anyway; building them from the generated pool avoids a
// second copy of reflection.proto (protobuf refuses duplicate registrations).
absl::StatusOr<const Message*> Prototype(const char* name) {
  // Referencing the plugin keeps libgrpc++_reflection (and its descriptors)
  // linked into binaries that only act as clients.
  static const bool linked = [] {
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    return true;
  }();
  (void)linked;
  const Descriptor* d = DescriptorPool::generated_pool()->FindMessageTypeByName(name);
  if (d == nullptr) return absl::InternalError(absl::StrCat("no descriptor for ", name));
  const Message* prototype = MessageFactory::generated_factory()->GetPrototype(d);
  if (prototype == nullptr) return absl::InternalError(absl::StrCat("no prototype for ", name));
  return prototype;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ListServicesByReflection(
    const std::shared_ptr<grpc::Channel>& channel, absl::Duration timeout) {
  auto request_proto = Prototype("grpc.reflection.v1alpha.ServerReflectionRequest");
  if (!request_proto.ok()) return request_proto.status();
  auto response_proto = Prototype("grpc.reflection.v1alpha.ServerReflectionResponse");
  if (!response_proto.ok()) return response_proto.status();

  std::unique_ptr<Message> request((*request_proto)->New());
  const Descriptor* rd = request->GetDescriptor();
  request->GetReflection()->SetString(request.get(), rd->FindFieldByName("list_services"), "");

  auto context = MakeCallContext(timeout);
  grpc::internal::RpcMethod method(kMethod, grpc::internal::RpcMethod::BIDI_STREAMING);
  std::unique_ptr<grpc::ClientReaderWriter<Message, Message>> stream(
      grpc::internal::ClientReaderWriterFactory<Message, Message>::Create(
          channel.get(), method, context.get()));
  stream->Write(*request);
  stream->WritesDone();
  std::unique_ptr<Message> response((*response_proto)->New());
  std::vector<std::string> names;
  while (stream->Read(response.get())) {
    const auto* refl = response->GetReflection();
    const auto* list_field = response->GetDescriptor()->FindFieldByName("list_services_response");
    if (!refl->HasField(*response, list_field)) continue;
    const Message& list = refl->GetMessage(*response, list_field);
    const auto* service_field = list.GetDescriptor()->FindFieldByName("service");
    int n = list.GetReflection()->FieldSize(list, service_field);
    for (int i = 0; i < n; ++i) {
      const Message& service = list.GetReflection()->GetRepeatedMessage(list, service_field, i);
      names.push_back(service.GetReflection()->GetString(
          service, service.GetDescriptor()->FindFieldByName("name")));
    }
  }
  grpc::Status status = stream->Finish();
  if (!status.ok()) return FromGrpcStatus(status, "reflection");
  return names;
}

}  // namespace dd
