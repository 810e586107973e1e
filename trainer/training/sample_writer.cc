#include "trainer/training/sample_writer.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "absl/strings/str_format.h"
#include "common/image/image_codec.h"
#include "common/io/file_util.h"
#include "common/status/status_macros.h"
#include "trainer/pipeline/txt2img.h"

namespace dd::training {

SampleWriter::SampleWriter(SampleWriterOptions options, StepRecorder* recorder)
    : options_(std::move(options)), recorder_(recorder) {}

absl::StatusOr<std::string> SampleWriter::Write(model::DiffusersModel* model, int64_t step) const {
  if (options_.prompts.empty()) return absl::FailedPreconditionError("no sample prompts");
  ASSIGN_OR_RETURN(auto pipe, pipeline::Txt2ImgPipeline::Create(model));
  const int grid = pipe.vae_scale() * (1 << (model->unet->config().block_out_channels.size() - 1));
  const int size = std::max(grid, options_.resolution / grid * grid);
  std::vector<RgbImage> images;
  for (size_t i = 0; i < options_.prompts.size(); ++i) {
    pipeline::Txt2ImgOptions po;
    po.prompt = options_.prompts[i];
    po.steps = options_.steps;
    po.guidance = options_.guidance;
    po.seed = 1000 + i;  // fixed across the run, so grids are comparable
    po.width = po.height = size;
    ASSIGN_OR_RETURN(auto image, pipe.Generate(po));
    ASSIGN_OR_RETURN(RgbImage rgb, pipeline::ToRgbImage(image));
    images.push_back(std::move(rgb));
  }
  ASSIGN_OR_RETURN(RgbImage grid_image, pipeline::MakeGrid(images, 4));
  ASSIGN_OR_RETURN(std::string png, EncodePng(grid_image));
  const std::string dir = options_.output_dir + "/samples";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::string path = absl::StrFormat("%s/step-%06d.png", dir, step);
  RETURN_IF_ERROR(WriteFileAtomically(path, png));
  std::string prompts;
  for (const auto& p : options_.prompts) prompts += p + "\n";
  RETURN_IF_ERROR(WriteFileAtomically(dir + "/prompts.txt", prompts));
  if (recorder_ != nullptr) RETURN_IF_ERROR(recorder_->AddImage("samples", step, grid_image));
  return path;
}

std::vector<std::string> PromptsFromCaptions(const std::vector<data::SampleRef>& samples,
                                             size_t max) {
  std::vector<std::string> prompts;
  std::set<std::string> seen;
  for (const auto& ref : samples) {
    if (prompts.size() >= max) break;
    if (!ref.has_caption) continue;
    auto text = data::ReadRange(ref.caption, 4096);
    if (!text.ok()) continue;
    std::string c = data::CleanCaption(*text);
    if (!c.empty() && seen.insert(c).second) prompts.push_back(c);
  }
  return prompts;
}

}  // namespace dd::training
