#include "trainer/model/safetensors.h"

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include "gtest/gtest.h"
#include "trainer/model/testing/fixtures.h"

namespace dd::model {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A header + data buffer built by hand, to break in controlled ways.
std::string Build(const std::string& header_json, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header_json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header_json + data;
}

absl::Status Check(const std::string& bytes) {
  return SafetensorsFile::FromBuffer(bytes, "test.safetensors").status();
}

TEST(Safetensors, ReadsTheFixtureModelParts) {
  std::string root = testing::TinySd1() + "/model";
  auto te = SafetensorsFile::Open(root + "/text_encoder/model.safetensors");
  ASSERT_TRUE(te.ok()) << te.status();
  EXPECT_EQ((*te)->metadata().at("format"), "pt");
  auto emb = (*te)->Find("embeddings.token_embedding.weight");
  ASSERT_TRUE(emb.ok()) << emb.status();
  EXPECT_EQ((*emb)->dtype, DType::kF32);
  EXPECT_EQ((*emb)->shape, (std::vector<int64_t>{2014, 32}));
  EXPECT_EQ((*emb)->nbytes, 2014u * 32 * 4);
  EXPECT_EQ((*te)->Find("no.such.tensor").status().code(), absl::StatusCode::kNotFound);
  for (const char* part : {"/unet/diffusion_pytorch_model.safetensors",
                           "/vae/diffusion_pytorch_model.safetensors"}) {
    auto f = SafetensorsFile::Open(root + part);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_GT((*f)->tensors().size(), 10u);
  }
}

TEST(Safetensors, RewritingTheFixtureGivesTheSameTensorsAndBytes) {
  std::string path = testing::TinySd1() + "/model/text_encoder/model.safetensors";
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  std::vector<TensorToWrite> tensors;
  for (const auto& t : (*f)->tensors()) {
    tensors.push_back({t.name, t.dtype, t.shape,
                       std::string(reinterpret_cast<const char*>(t.data), t.nbytes)});
  }
  auto bytes = SerializeSafetensors(tensors, (*f)->metadata());
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  // Same order, offsets and padding as the reference writer for this file.
  EXPECT_EQ(*bytes, Slurp(path));
  auto again = SafetensorsFile::FromBuffer(*bytes, "rewritten");
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_EQ((*again)->tensors().size(), (*f)->tensors().size());
  std::string out = std::string(std::getenv("TEST_TMPDIR")) + "/written.safetensors";
  ASSERT_TRUE(WriteSafetensors(out, tensors, (*f)->metadata()).ok());
  auto reread = SafetensorsFile::Open(out);
  ASSERT_TRUE(reread.ok()) << reread.status();
  for (const auto& t : (*f)->tensors()) {
    auto r = (*reread)->Find(t.name);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ((*r)->shape, t.shape);
    EXPECT_EQ((*r)->dtype, t.dtype);
    ASSERT_EQ(std::memcmp((*r)->data, t.data, t.nbytes), 0) << t.name;
  }
}

TEST(Safetensors, BadFilesAreClearErrorsNamingFileAndTensor) {
  const std::string ok_header =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[2,2],"data_offsets":[8,16]}})";
  const std::string data(16, '\1');
  ASSERT_TRUE(Check(Build(ok_header, data)).ok());
  struct Case {
    std::string bytes;
    absl::StatusCode code;
    const char* mentions;
  } cases[] = {
      {Build(ok_header, data).substr(0, 30), absl::StatusCode::kDataLoss, "longer than the file"},
      {Build(ok_header, data).substr(0, 5), absl::StatusCode::kDataLoss, "8-byte"},
      {Build(ok_header, data.substr(0, 12)), absl::StatusCode::kInvalidArgument, "\"b\""},
      {Build("not json", ""), absl::StatusCode::kInvalidArgument, "JSON"},
      {Build(R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')),
       absl::StatusCode::kInvalidArgument, "F33"},
      {Build(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')),
       absl::StatusCode::kInvalidArgument, "\"a\""},
      {Build(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, '\0')),
       absl::StatusCode::kInvalidArgument, "negative"},
      {Build(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
             std::string(12, '\0')),
       absl::StatusCode::kInvalidArgument, "overlaps"},
      {Build(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", std::string(16, '\0')),
       absl::StatusCode::kInvalidArgument, "belong to no tensor"},
      {Build(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(9, '\0')),
       absl::StatusCode::kInvalidArgument, "trailing"},
      {Build(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
             std::string(8, '\0')),
       absl::StatusCode::kInvalidArgument, "overflow"},
      {Build(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,99999]}})", std::string(8, '\0')),
       absl::StatusCode::kInvalidArgument, "outside"},
  };
  for (const auto& c : cases) {
    absl::Status s = Check(c.bytes);
    EXPECT_EQ(s.code(), c.code) << s;
    EXPECT_NE(s.message().find(c.mentions), absl::string_view::npos) << s;
    EXPECT_NE(s.message().find("test.safetensors"), absl::string_view::npos) << s;
  }
  std::string huge(8, '\xff');
  EXPECT_EQ(Check(huge).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SafetensorsFile::Open("/nonexistent.safetensors").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(Safetensors, WriterRefusesInconsistentTensors) {
  EXPECT_FALSE(SerializeSafetensors({{"a", DType::kF32, {3}, std::string(8, '\0')}}).ok());
  EXPECT_FALSE(SerializeSafetensors({{"a", DType::kF32, {2}, std::string(8, '\0')},
                                     {"a", DType::kF32, {2}, std::string(8, '\0')}})
                   .ok());
}

// Bounded fuzzing of the header parser under Bazel (the libFuzzer target is
// safetensors_fuzz.cc): mutated copies of a valid file never crash.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

TEST(Safetensors, MutatedHeadersNeverCrash) {
  std::string valid = Build(
      R"({"__metadata__":{"k":"v"},"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"I64","shape":[1],"data_offsets":[12,20]}})",
      std::string(20, '\2'));
  std::mt19937 rng(5);
  for (int i = 0; i < 20000; ++i) {
    std::string m = valid;
    int edits = 1 + rng() % 4;
    for (int e = 0; e < edits; ++e) {
      switch (rng() % 3) {
        case 0: m[rng() % m.size()] = static_cast<char>(rng()); break;
        case 1: m.resize(rng() % (m.size() + 1)); break;
        case 2: m.insert(rng() % (m.size() + 1), 1, "0123456789[]{},:\"-"[rng() % 18]); break;
      }
      if (m.empty()) break;
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(m.data()), m.size());
  }
}

}  // namespace
}  // namespace dd::model
