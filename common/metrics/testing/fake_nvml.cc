// A stand-in for libnvidia-ml.so.1 with the five functions gpu_memory.cc
// loads: two devices with fixed memory numbers (device 1's used memory grows
// by 1 MiB per read), and FAKE_NVML_FAIL_INIT=1 makes nvmlInit_v2 fail.
#include <cstdlib>

extern "C" {

struct FakeMemory {
  unsigned long long total, free, used;  // NOLINT(runtime/int)
};

static int devices[2];
static unsigned long long reads = 0;  // NOLINT(runtime/int)

int nvmlInit_v2() { return std::getenv("FAKE_NVML_FAIL_INIT") != nullptr ? 3 : 0; }
int nvmlShutdown() { return 0; }
int nvmlDeviceGetCount_v2(unsigned* count) {
  *count = 2;
  return 0;
}
int nvmlDeviceGetHandleByIndex_v2(unsigned index, void** device) {
  if (index >= 2) return 2;  // NVML_ERROR_INVALID_ARGUMENT
  *device = &devices[index];
  return 0;
}
int nvmlDeviceGetMemoryInfo(void* device, FakeMemory* memory) {
  const bool second = device == &devices[1];
  memory->total = second ? (80ull << 30) : (24ull << 30);
  memory->used = second ? (1ull << 30) + (reads++ << 20) : (3ull << 30);
  memory->free = memory->total - memory->used;
  return 0;
}

}  // extern "C"
