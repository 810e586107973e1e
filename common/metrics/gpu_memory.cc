#include "common/metrics/gpu_memory.h"

#include <dlfcn.h>

#include <glog/logging.h>

#include "absl/strings/str_cat.h"

namespace dd::metrics {
namespace {

// The few NVML declarations used (nvml.h, which is not needed to build):
// every function returns nvmlReturn_t, 0 for success.
using NvmlReturn = int;
using NvmlDevice = void*;
struct NvmlMemoryInfo {
  unsigned long long total;  // NOLINT(runtime/int): NVML's own types
  unsigned long long free;   // NOLINT(runtime/int)
  unsigned long long used;   // NOLINT(runtime/int)
};

}  // namespace

struct NvmlMemory::Api {
  void* handle = nullptr;
  NvmlReturn (*init)() = nullptr;
  NvmlReturn (*shutdown)() = nullptr;
  NvmlReturn (*device_count)(unsigned*) = nullptr;
  NvmlReturn (*device_by_index)(unsigned, NvmlDevice*) = nullptr;
  NvmlReturn (*memory_info)(NvmlDevice, NvmlMemoryInfo*) = nullptr;
};

absl::StatusOr<std::unique_ptr<NvmlMemory>> NvmlMemory::Open(const std::string& library) {
  auto api = std::make_unique<Api>();
  api->handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (api->handle == nullptr) {
    return absl::UnavailableError(absl::StrCat("no NVML: ", dlerror()));
  }
  auto load = [&](const char* name, auto* fn) {
    *fn = reinterpret_cast<std::remove_pointer_t<decltype(fn)>>(dlsym(api->handle, name));
    return *fn != nullptr;
  };
  if (!load("nvmlInit_v2", &api->init) || !load("nvmlShutdown", &api->shutdown) ||
      !load("nvmlDeviceGetCount_v2", &api->device_count) ||
      !load("nvmlDeviceGetHandleByIndex_v2", &api->device_by_index) ||
      !load("nvmlDeviceGetMemoryInfo", &api->memory_info)) {
    dlclose(api->handle);
    return absl::UnavailableError(absl::StrCat(library, " lacks an NVML function"));
  }
  if (NvmlReturn r = api->init(); r != 0) {
    dlclose(api->handle);
    return absl::UnavailableError(absl::StrCat("nvmlInit_v2 returned ", r));
  }
  return std::unique_ptr<NvmlMemory>(new NvmlMemory(std::move(api)));
}

NvmlMemory::NvmlMemory(std::unique_ptr<Api> api) : api_(std::move(api)) {}

NvmlMemory::~NvmlMemory() {
  api_->shutdown();
  dlclose(api_->handle);
}

absl::StatusOr<std::vector<NvmlMemory::Device>> NvmlMemory::Read() const {
  unsigned count = 0;
  if (NvmlReturn r = api_->device_count(&count); r != 0) {
    return absl::InternalError(absl::StrCat("nvmlDeviceGetCount_v2 returned ", r));
  }
  std::vector<Device> devices;
  for (unsigned i = 0; i < count; ++i) {
    NvmlDevice device = nullptr;
    NvmlMemoryInfo info = {};
    if (NvmlReturn r = api_->device_by_index(i, &device); r != 0) {
      return absl::InternalError(absl::StrCat("nvmlDeviceGetHandleByIndex_v2(", i, ") returned ", r));
    }
    if (NvmlReturn r = api_->memory_info(device, &info); r != 0) {
      return absl::InternalError(absl::StrCat("nvmlDeviceGetMemoryInfo(", i, ") returned ", r));
    }
    devices.push_back({i, info.used, info.total});
  }
  return devices;
}

bool AddGpuMemoryMetrics(MetricsRegistry* registry, const std::string& library) {
  auto nvml = NvmlMemory::Open(library);
  if (!nvml.ok()) {
    VLOG(1) << "no GPU memory metrics: " << nvml.status();
    return false;
  }
  // Shared by the two families; lives as long as the registry's functions.
  std::shared_ptr<NvmlMemory> shared = std::move(*nvml);
  auto read = [shared](bool used) {
    GaugeSamples samples;
    auto devices = shared->Read();
    if (!devices.ok()) {
      LOG_EVERY_N(WARNING, 100) << "GPU memory: " << devices.status();
      return samples;
    }
    for (const auto& d : *devices) {
      samples.push_back({{absl::StrCat(d.index)}, double(used ? d.used_bytes : d.total_bytes)});
    }
    return samples;
  };
  registry->AddGaugeFunction("dd_gpu_memory_used_bytes",
                             "Memory in use on each GPU (all processes), as the driver reports it.",
                             {"gpu"}, [read] { return read(true); });
  registry->AddGaugeFunction("dd_gpu_memory_total_bytes", "Memory of each GPU.", {"gpu"},
                             [read] { return read(false); });
  return true;
}

}  // namespace dd::metrics
