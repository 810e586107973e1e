#include "services/coordinator/run_config.h"

#include "gtest/gtest.h"

namespace dd::coordinator {
namespace {

TEST(RunConfig, PassesTheDocumentThrough) {
  auto c = ParseRunConfig(R"({"run_id": "shapes-1", "model": {"size": "tiny"}, "lr": 0.0001})",
                          "run.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->run_id, "shapes-1");
  EXPECT_NE(c->json.find("\"tiny\""), std::string::npos);
}

TEST(RunConfig, MalformedConfigsAreClearErrors) {
  struct Case {
    const char* text;
    const char* mentions;
  } cases[] = {
      {"{\"run_id\": \"a\",", "not valid JSON"},
      {"[1, 2]", "must be a JSON object"},
      {"{\"model\": \"x\"}", "run_id"},
      {"{\"run_id\": 5}", "run_id"},
      {"{\"run_id\": \"\"}", "1-64"},
      {"{\"run_id\": \"has space\"}", "1-64"},
      {"{\"run_id\": \"../etc\"}", "1-64"},
      {"{\"run_id\": \"ok\", \"target_batch_size\": -3}", "target_batch_size"},
      {"{\"run_id\": \"ok\", \"target_batch_size\": \"big\"}", "target_batch_size"},
  };
  for (const auto& c : cases) {
    auto r = ParseRunConfig(c.text, "cfg.json");
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.mentions), absl::string_view::npos)
        << r.status() << " for " << c.text;
    EXPECT_NE(r.status().message().find("cfg.json"), absl::string_view::npos);
  }
  EXPECT_EQ(LoadRunConfig("/nonexistent/run.json").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace dd::coordinator
