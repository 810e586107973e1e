#include "trainer/model/device.h"

#include <ATen/detail/CUDAHooksInterface.h>

#include <optional>

#include "absl/strings/str_cat.h"

namespace dd::model {

absl::StatusOr<at::Device> ResolveDevice(const std::string& name) {
  if (name == "auto") return at::hasCUDA() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  std::optional<at::Device> device;
  try {
    device.emplace(name);
  } catch (const c10::Error&) {
    return absl::InvalidArgumentError(absl::StrCat("--device \"", name, "\": use cpu, cuda, cuda:N or auto"));
  }
  if (!device->is_cpu() && !device->is_cuda()) {
    return absl::InvalidArgumentError(absl::StrCat("--device \"", name, "\": only cpu and cuda are supported"));
  }
  if (device->is_cuda()) {
    if (!at::hasCUDA()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--device=", name, ": this build of libtorch has no CUDA or the machine has no GPU"));
    }
    if (device->has_index() && device->index() >= static_cast<int>(at::detail::getCUDAHooks().getNumGPUs())) {
      return absl::FailedPreconditionError(absl::StrCat("--device=", name, ": no such GPU"));
    }
  }
  return *device;
}

}  // namespace dd::model
