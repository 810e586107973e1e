#include <string>

#include "common/status/grpc_status.h"
#include "common/status/status_macros.h"
#include "gtest/gtest.h"

namespace dd {
namespace {

absl::StatusOr<int> Half(int x) {
  if (x % 2 != 0) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::StatusOr<int> Quarter(int x) {
  ASSIGN_OR_RETURN(int half, Half(x));
  ASSIGN_OR_RETURN(int quarter, Half(half));
  return quarter;
}

absl::Status CheckEven(int x) {
  RETURN_IF_ERROR(Half(x).status());
  return absl::OkStatus();
}

TEST(StatusMacros, AssignOrReturnUnwrapsAndPropagates) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Quarter(7).status().message(), "odd");
}

TEST(StatusMacros, ReturnIfErrorPropagates) {
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_EQ(CheckEven(3).code(), absl::StatusCode::kInvalidArgument);
}

TEST(GrpcStatus, EveryCanonicalCodeRoundTrips) {
  for (int code = 0; code <= 16; ++code) {
    absl::Status s(static_cast<absl::StatusCode>(code), code ? "msg" : "");
    grpc::Status g = ToGrpcStatus(s);
    EXPECT_EQ(static_cast<int>(g.error_code()), code);
    absl::Status back = FromGrpcStatus(g);
    EXPECT_EQ(back.code(), s.code());
    if (code != 0) {
      EXPECT_EQ(g.error_message(), "msg");
      EXPECT_EQ(back.message(), "msg");
    }
  }
}

TEST(GrpcStatus, ContextPrefixesMessage) {
  absl::Status s = FromGrpcStatus(
      grpc::Status(grpc::StatusCode::NOT_FOUND, "no chunk 7"), "ReadChunk");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "ReadChunk: no chunk 7");
}

// A message quoting a field the caller chose (a 1 MiB id) must not reach
// the wire whole: a receiver refuses trailing metadata over 16 KiB.
TEST(GrpcStatus, LongMessagesAreCutAndSaySo) {
  const std::string id(1 << 20, 'p');
  grpc::Status g = ToGrpcStatus(absl::PermissionDeniedError("cannot send parts as " + id));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_LT(g.error_message().size(), kMaxStatusMessageBytes + 64);
  EXPECT_EQ(g.error_message().rfind("cannot send parts as ppp", 0), 0u);
  EXPECT_NE(g.error_message().find("more bytes cut)"), std::string::npos) << g.error_message();
  EXPECT_EQ(ToGrpcStatus(absl::NotFoundError("short")).error_message(), "short");
}

}  // namespace
}  // namespace dd
