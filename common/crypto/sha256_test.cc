#include "common/crypto/sha256.h"

#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace dd {
namespace {

// FIPS 180-2 test vectors.
TEST(Sha256, KnownVectors) {
  EXPECT_EQ(DigestToHex(Sha256Of("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(DigestToHex(Sha256Of("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(
      DigestToHex(Sha256Of(
          "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256, IncrementalEqualsOneShotAndFinishResets) {
  std::string million(1000000, 'a');
  Sha256 h;
  for (size_t i = 0; i < million.size(); i += 4093) {
    h.Update(absl::string_view(million).substr(i, 4093));
  }
  EXPECT_EQ(DigestToHex(h.Finish()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  h.Update("abc");
  EXPECT_EQ(h.Finish(), Sha256Of("abc"));
}

TEST(Sha256, HexRoundTripAndRejectsBadHex) {
  Sha256Digest d = Sha256Of("x");
  auto back = DigestFromHex(DigestToHex(d));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, d);
  EXPECT_FALSE(DigestFromHex("abc").ok());
  EXPECT_FALSE(DigestFromHex(std::string(64, 'g')).ok());
}

TEST(Sha256, FileHashMatchesAndMissingFileIsNotFound) {
  std::string path = std::string(getenv("TEST_TMPDIR")) + "/f.bin";
  std::string data(3 << 20, '\x5a');
  std::ofstream(path, std::ios::binary) << data;
  auto digest = Sha256OfFile(path);
  ASSERT_TRUE(digest.ok()) << digest.status();
  EXPECT_EQ(*digest, Sha256Of(data));
  EXPECT_EQ(Sha256OfFile(path + ".missing").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace dd
