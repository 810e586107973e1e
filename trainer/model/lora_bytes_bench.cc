// Benchmark: what one global step of a collaboration sends per peer when it
// averages LoRA adapters instead of the whole UNet, for SD 1.5's shapes
// (random weights; the adapters on the attention projections, the default
// target) at ranks 4, 16 and 64, through the codecs the runs use. The
// bytes are measured by encoding the vectors with the codecs; the baseline
// in the same run is the full UNet through the same codecs. A butterfly
// member of N sends (N-1)/N of the encoded vector (the parts others reduce)
// and receives as much (the means); the time is that upload at 100 Mbit/s.
//
//   bazel build -c opt //trainer/model:lora_bytes_bench && bazel-bin/trainer/model/lora_bytes_bench
#include <iostream>
#include <vector>

#include <gflags/gflags.h>

#include "absl/strings/str_format.h"
#include "common/init/init.h"
#include "trainer/averaging/codec.h"
#include "trainer/model/lora.h"
#include "trainer/model/model_init.h"
#include "trainer/model/unet.h"
#include "common/status/status_macros.h"

DEFINE_int32(peers, 4, "Members of a round.");
DEFINE_double(mbit, 100, "Link speed for the time column (Mbit/s, upload).");

namespace {

using dd::averaging::CodecFor;
using dd::averaging::CodecId;

// Bytes the codec makes of `n` values, by encoding them (in chunks, so the
// full UNet's vector is not copied whole).
size_t EncodedBytes(CodecId codec, size_t n) {
  std::vector<float> chunk(std::min<size_t>(n, size_t{1} << 24), 0.5f);
  size_t total = 0;
  std::string out;
  for (size_t done = 0; done < n;) {
    const size_t m = std::min(chunk.size(), n - done);
    out.clear();
    CodecFor(codec).Encode(chunk.data(), m, &out);
    total += out.size();
    done += m;
  }
  return total;
}

absl::Status Run(int, char**) {
  ASSIGN_OR_RETURN(std::string json, dd::model::UNetConfigJson("sd15"));
  ASSIGN_OR_RETURN(dd::model::UNetConfig config, dd::model::ParseUNetConfig(json, "sd15"));
  ASSIGN_OR_RETURN(auto unet, dd::model::UNet::Random(config, 1));
  int64_t full = 0;
  for (const auto& p : unet->parameters()) full += p.value.numel();
  const double share = double(FLAGS_peers - 1) / FLAGS_peers;
  std::cout << absl::StrFormat(
      "| trained | values | codec | bytes sent per peer per global step (%d peers) | vs full, same codec | "
      "upload at %.0f Mbit/s |\n| --- | ---: | --- | ---: | ---: | ---: |\n",
      FLAGS_peers, FLAGS_mbit);
  const std::vector<CodecId> codecs = {CodecId::kFp16, CodecId::kBlockwise8Bit};
  std::vector<size_t> full_bytes;
  for (CodecId c : codecs) full_bytes.push_back(EncodedBytes(c, full) * share);
  auto row = [&](const std::string& what, int64_t values) {
    for (size_t i = 0; i < codecs.size(); ++i) {
      const size_t bytes = EncodedBytes(codecs[i], values) * share;
      std::cout << absl::StrFormat("| %s | %d | %s | %.2f MB | %.5f | %.2f s |\n", what, values,
                                   CodecFor(codecs[i]).name(), bytes / 1e6,
                                   double(bytes) / full_bytes[i], bytes * 8 / (FLAGS_mbit * 1e6));
    }
  };
  row("full UNet (baseline)", full);
  for (int rank : {4, 16, 64}) {
    dd::model::LoraOptions o;
    o.rank = rank;
    ASSIGN_OR_RETURN(auto adapters, dd::model::AttachLora(unet->lora_slots(), o));
    int64_t values = 0;
    for (const auto& p : adapters) values += p.value.numel();
    row(absl::StrFormat("LoRA rank %d (%d layers)", rank, adapters.size() / 2), values);
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) { return dd::RunMain("lora_bytes_bench", argc, argv, Run); }
