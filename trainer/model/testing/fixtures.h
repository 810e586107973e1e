// Test-only: where the reference fixtures are, and how far a result is from
// a reference output.
#ifndef TRAINER_MODEL_TESTING_FIXTURES_H_
#define TRAINER_MODEL_TESTING_FIXTURES_H_

#include <ATen/ATen.h>

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"

namespace dd::model::testing {

// ../shared/fixtures/tiny-sd1, from FIXTURES_DIR (set by tests/run_all.sh).
// Fails the test with a clear message when it is not set.
inline std::string TinySd1() {
  const char* dir = std::getenv("FIXTURES_DIR");
  if (dir == nullptr) {
    ADD_FAILURE() << "FIXTURES_DIR is not set: run through tests/run_all.sh, which points it at "
                     "../shared/fixtures";
    return "";
  }
  return std::string(dir) + "/tiny-sd1";
}

// max |got - want| / max |want|.
inline double RelativeError(const at::Tensor& got, const at::Tensor& want) {
  return (got - want).abs().max().item<double>() / want.abs().max().item<double>();
}

}  // namespace dd::model::testing

#endif  // TRAINER_MODEL_TESTING_FIXTURES_H_
