// Parity with transformers' CLIPTokenizer (tokenizers backend) on every case
// of ../shared/fixtures/tiny-sd1/reference/tokenizer_cases.json.
#include "trainer/model/clip_tokenizer.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "gtest/gtest.h"
#include "trainer/model/testing/fixtures.h"

namespace dd::model {
namespace {

TEST(ClipTokenizer, MatchesTheReferenceOnEveryCase) {
  auto tok = ClipTokenizer::Load(testing::TinySd1() + "/model/tokenizer");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->bos_id(), 2012);
  EXPECT_EQ((*tok)->eos_id(), 2013);
  EXPECT_EQ((*tok)->pad_id(), 2013);
  EXPECT_EQ((*tok)->model_max_length(), 77);
  std::ifstream in(testing::TinySd1() + "/reference/tokenizer_cases.json");
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json doc = nlohmann::json::parse(ss.str());
  int checked = 0;
  for (const auto& c : doc["cases"]) {
    std::string text = c["text"].get<std::string>();
    EXPECT_EQ((*tok)->Encode(text), c["ids"].get<std::vector<int>>()) << "\"" << text << "\"";
    EXPECT_EQ((*tok)->EncodePadded(text), c["ids_padded_77"].get<std::vector<int>>())
        << "\"" << text << "\"";
    ++checked;
  }
  EXPECT_EQ(checked, 12);
}

TEST(ClipTokenizer, InvalidUtf8AndSpecialTokensInText) {
  auto tok = ClipTokenizer::Load(testing::TinySd1() + "/model/tokenizer");
  ASSERT_TRUE(tok.ok());
  std::vector<int> ids = (*tok)->Encode("bad \xff\xfe bytes");
  EXPECT_EQ(ids.front(), 2012);
  EXPECT_EQ(ids.back(), 2013);
  std::vector<int> special = (*tok)->Encode("a<|endoftext|>b");
  EXPECT_NE(std::find(special.begin() + 1, special.end() - 1, 2013), special.end() - 1);
  EXPECT_EQ((*tok)->EncodePadded("x", 5).size(), 5u);
}

// SD 2.x's tokenizer pads with "!". transformers registers every named
// special token (bos, eos, pad, unk) as a special added token matched in
// the raw text, so a "!" in a prompt becomes the pad token's id, not the
// BPE symbol "!</w>" (issue 17: "Hello, World!" came out differently).
// transformers' output for "! !! !!!" with SDXL's tokenizer_2 (pad "!", id
// 0), as reported in huggingface/diffusers#4153: 49406, 0 x 6, 49407.
TEST(ClipTokenizer, APadTokenThatIsAlsoTextIsMatchedAsTheSpecialToken) {
  const std::string fixture = testing::TinySd1() + "/model/tokenizer";
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/tok-pad-bang";
  std::system(("rm -rf " + dir + " && mkdir -p " + dir + " && cp " + fixture + "/vocab.json " +
               fixture + "/merges.txt " + dir + "/").c_str());
  std::ofstream(dir + "/special_tokens_map.json")
      << R"({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
             "unk_token": "<|endoftext|>", "pad_token": "!"})";
  auto sd1 = ClipTokenizer::Load(fixture);
  auto sd2 = ClipTokenizer::Load(dir);
  ASSERT_TRUE(sd1.ok() && sd2.ok()) << sd2.status();
  const int bang = 0, bang_end_of_word = 256;  // "!" and "!</w>" in vocab.json
  std::vector<int> a = (*sd1)->Encode("Hello, World!");
  std::vector<int> b = (*sd2)->Encode("Hello, World!");
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(a[a.size() - 2], bang_end_of_word);  // a plain piece of text
  EXPECT_EQ(b[b.size() - 2], bang);               // the pad token
  EXPECT_EQ(std::vector<int>(a.begin(), a.end() - 2), std::vector<int>(b.begin(), b.end() - 2));
  std::vector<int> padded = (*sd2)->EncodePadded("x", 5);
  EXPECT_EQ(padded.back(), bang);
  EXPECT_EQ((*sd2)->Encode("! !! !!!"), (std::vector<int>{2012, 0, 0, 0, 0, 0, 0, 2013}));
}

TEST(ClipTokenizer, MissingOrBrokenFilesAreClearErrors) {
  EXPECT_EQ(ClipTokenizer::Load("/nonexistent").status().code(), absl::StatusCode::kNotFound);
  std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/tok";
  std::system(("mkdir -p " + dir).c_str());
  std::ofstream(dir + "/vocab.json") << "{\"a</w>\": 0}";
  std::ofstream(dir + "/merges.txt") << "#version: 0.2\na b c\n";
  auto bad = ClipTokenizer::Load(dir);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  std::ofstream(dir + "/merges.txt") << "#version: 0.2\na b\n";
  auto no_special = ClipTokenizer::Load(dir);
  EXPECT_EQ(no_special.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(no_special.status().message().find("<|startoftext|>"), absl::string_view::npos);
}

}  // namespace
}  // namespace dd::model
