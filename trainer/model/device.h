// The device a name asks for ("cpu", "cuda", "cuda:N", "auto"), checked
// against this libtorch build and this machine before anything loads.
#ifndef TRAINER_MODEL_DEVICE_H_
#define TRAINER_MODEL_DEVICE_H_

#include <ATen/ATen.h>

#include <string>

#include "absl/status/statusor.h"

namespace dd::model {

// "auto" is the first GPU when this libtorch has CUDA and sees one, else the
// CPU. InvalidArgument for a malformed name or another kind of device;
// FailedPrecondition for a GPU that this build or machine does not have.
absl::StatusOr<at::Device> ResolveDevice(const std::string& name);

}  // namespace dd::model

#endif  // TRAINER_MODEL_DEVICE_H_
