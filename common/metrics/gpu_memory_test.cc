#include "common/metrics/gpu_memory.h"

#include <cstdlib>

#include "common/metrics/testing/exposition_parser.h"
#include "gtest/gtest.h"

namespace dd::metrics {
namespace {

// Built beside this test (a data dependency): NVML's functions, faked.
constexpr char kFakeNvml[] = "common/metrics/libfake_nvml.so";

TEST(GpuMemory, NoDriverMeansNoFamilies) {
  EXPECT_EQ(NvmlMemory::Open("libnvidia-ml-absent.so.1").status().code(),
            absl::StatusCode::kUnavailable);
  MetricsRegistry registry;
  EXPECT_FALSE(AddGpuMemoryMetrics(&registry, "libnvidia-ml-absent.so.1"));
  EXPECT_EQ(registry.Render().find("dd_gpu"), std::string::npos);
}

TEST(GpuMemory, AFailedInitialisationIsUnavailable) {
  setenv("FAKE_NVML_FAIL_INIT", "1", 1);
  EXPECT_EQ(NvmlMemory::Open(kFakeNvml).status().code(), absl::StatusCode::kUnavailable);
  unsetenv("FAKE_NVML_FAIL_INIT");
}

TEST(GpuMemory, ReadsEveryDeviceThroughNvml) {
  auto nvml = NvmlMemory::Open(kFakeNvml);
  ASSERT_TRUE(nvml.ok()) << nvml.status();
  auto devices = (*nvml)->Read();
  ASSERT_TRUE(devices.ok()) << devices.status();
  ASSERT_EQ(devices->size(), 2u);
  EXPECT_EQ((*devices)[0].used_bytes, 3ull << 30);
  EXPECT_EQ((*devices)[0].total_bytes, 24ull << 30);
  EXPECT_EQ((*devices)[1].total_bytes, 80ull << 30);
}

TEST(GpuMemory, MetricsAreReadAtEachScrape) {
  MetricsRegistry registry;
  ASSERT_TRUE(AddGpuMemoryMetrics(&registry, kFakeNvml));
  auto first = testing::ParseExposition(registry.Render());
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = testing::ParseExposition(registry.Render());
  ASSERT_TRUE(second.ok()) << second.status();
  const auto& total = first->at("dd_gpu_memory_total_bytes");
  EXPECT_EQ(total.type, "gauge");
  EXPECT_EQ(total.samples.at("dd_gpu_memory_total_bytes{gpu=\"1\"}"), double(80ull << 30));
  EXPECT_EQ(first->at("dd_gpu_memory_used_bytes").samples.at("dd_gpu_memory_used_bytes{gpu=\"0\"}"),
            double(3ull << 30));
  // Device 1's use grows with every read in the fake: the scrape read anew.
  const std::string used1 = "dd_gpu_memory_used_bytes{gpu=\"1\"}";
  EXPECT_GT(second->at("dd_gpu_memory_used_bytes").samples.at(used1),
            first->at("dd_gpu_memory_used_bytes").samples.at(used1));
}

}  // namespace
}  // namespace dd::metrics
