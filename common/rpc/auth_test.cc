#include "common/rpc/auth.h"

#include <cstdlib>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace dd {
namespace {

std::string WriteTemp(const std::string& name, const std::string& contents) {
  std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
  std::ofstream(path) << contents;
  return path;
}

TEST(LoadAuthToken, FileWinsAndTrailingNewlineIsStripped) {
  setenv(kAuthTokenEnvVar, "from-the-environment-0123", 1);
  auto token = LoadAuthToken(WriteTemp("t1", "0123456789abcdef0123\n"));
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "0123456789abcdef0123");
  unsetenv(kAuthTokenEnvVar);
}

TEST(LoadAuthToken, EnvironmentWhenNoFile) {
  setenv(kAuthTokenEnvVar, "from-the-environment-0123", 1);
  auto token = LoadAuthToken("");
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, "from-the-environment-0123");
  unsetenv(kAuthTokenEnvVar);
}

TEST(LoadAuthToken, MissingEverywhereIsNotFound) {
  unsetenv(kAuthTokenEnvVar);
  EXPECT_EQ(LoadAuthToken("").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(LoadAuthToken("/nonexistent/token").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(LoadAuthToken, RejectsWeakOrMalformedTokens) {
  EXPECT_EQ(LoadAuthToken(WriteTemp("t2", "\n")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadAuthToken(WriteTemp("t3", "short")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadAuthToken(WriteTemp("t4", "has a space in it 0123")).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ConstantTimeEquals, ComparesContentsAndLengths) {
  EXPECT_TRUE(ConstantTimeEquals("Bearer abc", "Bearer abc"));
  EXPECT_FALSE(ConstantTimeEquals("Bearer abc", "Bearer abd"));
  EXPECT_FALSE(ConstantTimeEquals("Bearer abc", "Bearer abcd"));
  EXPECT_FALSE(ConstantTimeEquals("", "x"));
}

}  // namespace
}  // namespace dd
