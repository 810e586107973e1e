// GPU memory for /metrics, read through NVML (libnvidia-ml.so.1, installed
// with the NVIDIA driver) loaded at run time: the same binary runs on
// machines without a GPU, builds without a CUDA toolkit, and sees what the
// driver sees (all of a process's CUDA memory: the caching allocator's
// reserve, cuDNN workspaces, the context), which is what decides an
// out-of-memory failure.
#ifndef COMMON_METRICS_GPU_MEMORY_H_
#define COMMON_METRICS_GPU_MEMORY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/metrics/prometheus.h"

namespace dd::metrics {

class NvmlMemory {
 public:
  struct Device {
    unsigned index = 0;
    uint64_t used_bytes = 0;
    uint64_t total_bytes = 0;
  };

  // Loads `library` and initialises NVML. Unavailable when the library is
  // missing (no driver) or its initialisation fails (no device).
  static absl::StatusOr<std::unique_ptr<NvmlMemory>> Open(
      const std::string& library = "libnvidia-ml.so.1");
  ~NvmlMemory();  // shuts NVML down and unloads it

  // Every device's memory now. Internal when NVML answers with an error.
  absl::StatusOr<std::vector<Device>> Read() const;

 private:
  struct Api;
  explicit NvmlMemory(std::unique_ptr<Api> api);

  // Fixed after construction.
  const std::unique_ptr<Api> api_;
};

// Registers dd_gpu_memory_used_bytes{gpu} and dd_gpu_memory_total_bytes{gpu}
// (read at each scrape) when NVML loads from `library`; returns whether it
// did (false on machines without an NVIDIA driver: no families).
bool AddGpuMemoryMetrics(MetricsRegistry* registry,
                         const std::string& library = "libnvidia-ml.so.1");

}  // namespace dd::metrics

#endif  // COMMON_METRICS_GPU_MEMORY_H_
