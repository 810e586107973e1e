#include "common/status/grpc_status.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace dd {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  absl::string_view message = status.message();
  std::string sent(message.substr(0, kMaxStatusMessageBytes));
  if (message.size() > kMaxStatusMessageBytes) {
    absl::StrAppend(&sent, "... (", message.size() - kMaxStatusMessageBytes, " more bytes cut)");
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::move(sent));
}

absl::Status FromGrpcStatus(const grpc::Status& status,
                            absl::string_view context) {
  if (status.ok()) return absl::OkStatus();
  std::string message = status.error_message();
  if (!context.empty()) message = absl::StrCat(context, ": ", message);
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      message);
}

}  // namespace dd
