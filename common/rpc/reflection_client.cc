#include "common/rpc/reflection_client.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/descriptor_database.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/impl/codegen/rpc_method.h>
#include <grpcpp/impl/codegen/client_unary_call.h>
#include <grpcpp/support/sync_stream.h>

#include "absl/strings/str_cat.h"
#include "common/rpc/channel.h"
#include "common/status/grpc_status.h"
#include "common/status/status_macros.h"

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

// A reflection request of one kind ("list_services" or
// "file_containing_symbol") with its string value.
absl::StatusOr<std::unique_ptr<Message>> ReflectionRequest(const std::string& kind,
                                                           const std::string& value) {
  ASSIGN_OR_RETURN(const Message* prototype,
                   Prototype("grpc.reflection.v1alpha.ServerReflectionRequest"));
  std::unique_ptr<Message> request(prototype->New());
  request->GetReflection()->SetString(request.get(),
                                      request->GetDescriptor()->FindFieldByName(kind), value);
  return request;
}

std::unique_ptr<grpc::ClientContext> ContextWith(const CallHeaders& headers,
                                                 absl::Duration timeout) {
  auto context = MakeCallContext(timeout);
  for (const auto& [name, value] : headers) context->AddMetadata(name, value);
  return context;
}

// Sends one request on a reflection stream and returns every response.
absl::StatusOr<std::vector<std::unique_ptr<Message>>> Exchange(
    const std::shared_ptr<grpc::Channel>& channel, const Message& request,
    const CallHeaders& headers, absl::Duration timeout) {
  ASSIGN_OR_RETURN(const Message* response_prototype,
                   Prototype("grpc.reflection.v1alpha.ServerReflectionResponse"));
  auto context = ContextWith(headers, timeout);
  grpc::internal::RpcMethod method(kMethod, grpc::internal::RpcMethod::BIDI_STREAMING);
  std::unique_ptr<grpc::ClientReaderWriter<Message, Message>> stream(
      grpc::internal::ClientReaderWriterFactory<Message, Message>::Create(
          channel.get(), method, context.get()));
  stream->Write(request);
  stream->WritesDone();
  std::vector<std::unique_ptr<Message>> responses;
  std::unique_ptr<Message> response(response_prototype->New());
  while (stream->Read(response.get())) {
    responses.push_back(std::move(response));
    response.reset(response_prototype->New());
  }
  grpc::Status status = stream->Finish();
  if (!status.ok()) return FromGrpcStatus(status, "reflection");
  return responses;
}

// The sub-message `field` of `m` when set, else null.
const Message* SubMessage(const Message& m, const char* field) {
  const auto* f = m.GetDescriptor()->FindFieldByName(field);
  if (f == nullptr || !m.GetReflection()->HasField(m, f)) return nullptr;
  return &m.GetReflection()->GetMessage(m, f);
}

absl::Status FromProtobufStatus(const google::protobuf::util::Status& s, const std::string& what) {
  if (s.ok()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", s.ToString()));
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ListServicesByReflection(
    const std::shared_ptr<grpc::Channel>& channel, absl::Duration timeout,
    const CallHeaders& headers) {
  ASSIGN_OR_RETURN(auto request, ReflectionRequest("list_services", ""));
  ASSIGN_OR_RETURN(auto responses, Exchange(channel, *request, headers, timeout));
  std::vector<std::string> names;
  for (const auto& response : responses) {
    const Message* list = SubMessage(*response, "list_services_response");
    if (list == nullptr) continue;
    const auto* service_field = list->GetDescriptor()->FindFieldByName("service");
    int n = list->GetReflection()->FieldSize(*list, service_field);
    for (int i = 0; i < n; ++i) {
      const Message& service = list->GetReflection()->GetRepeatedMessage(*list, service_field, i);
      names.push_back(service.GetReflection()->GetString(
          service, service.GetDescriptor()->FindFieldByName("name")));
    }
  }
  return names;
}

absl::StatusOr<std::vector<std::string>> CallByReflection(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& method_name,
    const std::string& request_json, const CallHeaders& headers, absl::Duration timeout) {
  size_t split = method_name.find_last_of("/.");
  if (split == std::string::npos || split == 0 || split + 1 == method_name.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", method_name, "\" is not package.Service/Method"));
  }
  const std::string service_name = method_name.substr(0, split);
  const std::string short_name = method_name.substr(split + 1);

  // The service's file and every file it imports, as the server describes
  // them, in a pool of their own.
  ASSIGN_OR_RETURN(auto request, ReflectionRequest("file_containing_symbol", service_name));
  ASSIGN_OR_RETURN(auto responses, Exchange(channel, *request, headers, timeout));
  google::protobuf::SimpleDescriptorDatabase database;
  for (const auto& response : responses) {
    if (const Message* error = SubMessage(*response, "error_response")) {
      return absl::NotFoundError(absl::StrCat(
          service_name, ": ",
          error->GetReflection()->GetString(
              *error, error->GetDescriptor()->FindFieldByName("error_message"))));
    }
    const Message* files = SubMessage(*response, "file_descriptor_response");
    if (files == nullptr) continue;
    const auto* field = files->GetDescriptor()->FindFieldByName("file_descriptor_proto");
    int n = files->GetReflection()->FieldSize(*files, field);
    for (int i = 0; i < n; ++i) {
      google::protobuf::FileDescriptorProto file;
      if (!file.ParseFromString(files->GetReflection()->GetRepeatedString(*files, field, i))) {
        return absl::DataLossError("reflection sent a file descriptor that does not parse");
      }
      database.Add(file);  // false for a file sent twice, which is harmless
    }
  }
  google::protobuf::DescriptorPool pool(&database);
  const auto* service = pool.FindServiceByName(service_name);
  if (service == nullptr) {
    return absl::NotFoundError(absl::StrCat("the server does not describe ", service_name));
  }
  const auto* method = service->FindMethodByName(short_name);
  if (method == nullptr) {
    return absl::NotFoundError(absl::StrCat(service_name, " has no method ", short_name));
  }
  if (method->client_streaming()) {
    return absl::UnimplementedError(absl::StrCat(method->full_name(), " streams requests"));
  }

  google::protobuf::DynamicMessageFactory factory(&pool);
  std::unique_ptr<Message> call_request(factory.GetPrototype(method->input_type())->New());
  RETURN_IF_ERROR(FromProtobufStatus(
      google::protobuf::util::JsonStringToMessage(request_json.empty() ? "{}" : request_json,
                                                  call_request.get()),
      absl::StrCat("request for ", method->full_name())));
  const Message* response_prototype = factory.GetPrototype(method->output_type());

  const std::string path = absl::StrCat("/", service_name, "/", short_name);
  auto context = ContextWith(headers, timeout);
  std::vector<std::unique_ptr<Message>> replies;
  grpc::Status status;
  if (method->server_streaming()) {
    grpc::internal::RpcMethod rpc(path.c_str(), grpc::internal::RpcMethod::SERVER_STREAMING);
    std::unique_ptr<grpc::ClientReader<Message>> reader(
        grpc::internal::ClientReaderFactory<Message>::Create(channel.get(), rpc, context.get(),
                                                             *call_request));
    std::unique_ptr<Message> reply(response_prototype->New());
    while (reader->Read(reply.get())) {
      replies.push_back(std::move(reply));
      reply.reset(response_prototype->New());
    }
    status = reader->Finish();
  } else {
    grpc::internal::RpcMethod rpc(path.c_str(), grpc::internal::RpcMethod::NORMAL_RPC);
    std::unique_ptr<Message> reply(response_prototype->New());
    status = grpc::internal::BlockingUnaryCall<Message, Message>(channel.get(), rpc, context.get(),
                                                                 *call_request, reply.get());
    if (status.ok()) replies.push_back(std::move(reply));
  }
  if (!status.ok()) return FromGrpcStatus(status, method->full_name());

  std::vector<std::string> json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  for (const auto& reply : replies) {
    std::string out;
    RETURN_IF_ERROR(FromProtobufStatus(
        google::protobuf::util::MessageToJsonString(*reply, &out, options), "response"));
    json.push_back(std::move(out));
  }
  return json;
}

}  // namespace dd
