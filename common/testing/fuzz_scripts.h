// Helpers for the services' fuzz targets and the Bazel tests that run them
// on generated input: the record format the targets read (writer and
// reader), and the loop
// that runs scripted inputs, mutated or cut short, through the entry point
// (and writes them out as a seed corpus when DD_FUZZ_SEED_DIR is set, which
// tools/fuzz/run_fuzzers.sh does with `bazel run`).
#ifndef COMMON_TESTING_FUZZ_SCRIPTS_H_
#define COMMON_TESTING_FUZZ_SCRIPTS_H_

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <random>
#include <string>

#include <google/protobuf/message.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace dd::testing {

// One call of a service fuzz target's input: [op][who][2-byte length, little
// endian][the serialized request].
inline std::string FuzzRecord(uint8_t op, uint8_t who, const google::protobuf::Message& request) {
  std::string bytes = request.SerializeAsString();
  std::string out(4, '\0');
  out[0] = static_cast<char>(op);
  out[1] = static_cast<char>(who);
  out[2] = static_cast<char>(bytes.size() & 0xff);
  out[3] = static_cast<char>((bytes.size() >> 8) & 0xff);
  return out + bytes;
}

// Reads a service fuzz target's input one FuzzRecord at a time. A record
// whose length runs past the input takes what is left of it.
class FuzzRecordReader {
 public:
  struct Record {
    uint8_t op = 0;
    uint8_t who = 0;
    size_t length = 0;  // as the record declares it
    const uint8_t* bytes = nullptr;
    size_t size = 0;  // of `bytes`: at most `length`
    // The request bytes as `message`; false when they do not parse.
    bool Parse(google::protobuf::Message* message) const {
      return message->ParseFromArray(bytes, static_cast<int>(size));
    }
  };

  FuzzRecordReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  // The next record, or false at the end of the input.
  bool Next(Record* r) {
    if (at_ + 4 > size_) return false;
    r->op = data_[at_];
    r->who = data_[at_ + 1];
    r->length = size_t{data_[at_ + 2]} | (size_t{data_[at_ + 3]} << 8);
    at_ += 4;
    r->size = r->length < size_ - at_ ? r->length : size_ - at_;
    r->bytes = data_ + at_;
    at_ += r->size;
    return true;
  }

 private:
  const uint8_t* const data_;
  const size_t size_;
  size_t at_ = 0;
};

// Runs `count` inputs made by `script` through LLVMFuzzerTestOneInput: a
// third as made, a third with `flips` random bytes changed, a third cut at
// a random length. Returns how many ran.
inline int RunFuzzScripts(int count, int flips,
                          const std::function<std::string(std::mt19937_64&)>& script) {
  std::mt19937_64 rng(2026);
  const char* seeds = std::getenv("DD_FUZZ_SEED_DIR");
  int ran = 0;
  for (int i = 0; i < count; ++i) {
    std::string input = script(rng);
    if (!input.empty() && i % 3 == 1) {
      for (int m = 0; m < flips; ++m) input[rng() % input.size()] ^= static_cast<char>(rng());
    } else if (!input.empty() && i % 3 == 2) {
      input.resize(rng() % input.size());
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
    ++ran;
    if (seeds != nullptr) {
      std::ofstream(std::string(seeds) + "/seed-" + std::to_string(i), std::ios::binary) << input;
    }
  }
  return ran;
}

}  // namespace dd::testing

#endif  // COMMON_TESTING_FUZZ_SCRIPTS_H_
