// Runs the tar reader's libFuzzer entry point on mutated archives: plain
// ustar members, a GNU long name and a pax header, cut and edited.
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "common/tar/tar_format.h"
#include "gtest/gtest.h"
#include "tests/testing/mutations.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace dd::tar {
namespace {

std::string Member(const std::string& name, const std::string& data) {
  std::string out = *MakeFileHeader(name, data.size());
  out += data;
  out.append(PaddingFor(data.size()), '\0');
  return out;
}

// A header of another type (the GNU 'L' long name, pax 'x') carrying `data`.
std::string Special(char type, const std::string& data) {
  std::string header = *MakeFileHeader("././@LongLink", data.size());
  header[156] = type;
  // Recompute the checksum over the edited header (spaces in its field).
  std::memset(&header[148], ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : header) sum += c;
  std::snprintf(&header[148], 8, "%06o", sum);
  header[155] = ' ';
  std::string out = header + data;
  out.append(PaddingFor(data.size()), '\0');
  return out;
}

TEST(TarFuzz, MutatedArchivesNeverCrashOrEscape) {
  const std::string trailer(kTrailerSize, '\0');
  std::string long_name(150, 'n');
  const std::vector<std::string> seeds = {
      Member("a.jpg", "abc") + Member("a.txt", std::string(700, 'x')) + trailer,
      Special('L', long_name + '\0') + Member("short", "data") + trailer,
      Special('x', "31 path=very/long/pax/name.jpg\n") + Member("p", "1234") + trailer,
  };
  for (const std::string& seed : seeds) {
    auto listed = ListEntries(
        [&](uint64_t off, size_t len, char* out) -> absl::StatusOr<size_t> {
          size_t n = std::min<uint64_t>(len, seed.size() - off);
          std::memcpy(out, seed.data() + off, n);
          return n;
        },
        seed.size());
    ASSERT_TRUE(listed.ok()) << listed.status();  // the seeds are valid archives
  }
  std::mt19937_64 rng(7);
  for (int i = 0; i < 30000; ++i) {
    std::string m = testing::Mutate(seeds[i % seeds.size()], rng, "0123456789 \n=x/L");
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(m.data()), m.size());
  }
}

}  // namespace
}  // namespace dd::tar
