// Says which libtorch a binary was built against and runs on: the version
// in its headers, whether it is a CUDA build and sees a GPU, and one tensor
// operation. The libtorch-rule test builds it against a chosen LIBTORCH.
#include <ATen/ATen.h>
#include <torch/version.h>

#include <cstdio>

int main() {
  at::Tensor t = at::arange(4, at::kFloat).reshape({2, 2});
  // [[0, 1], [2, 3]]^2 = [[2, 3], [6, 11]]: trace 13.
  const double trace = at::trace(at::matmul(t, t)).item<double>();
  std::printf("headers %s\n", TORCH_VERSION);
  std::printf("cxx11_abi %d\n", _GLIBCXX_USE_CXX11_ABI);
  std::printf("cuda_built %d\n", at::hasCUDA() ? 1 : 0);
  std::printf("built_with %s\n", DD_LIBTORCH_ROOT);
  std::printf("trace %g\n", trace);
  return trace == 13 ? 0 : 1;
}
