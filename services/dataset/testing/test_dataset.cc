#include "services/dataset/testing/test_dataset.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_format.h"
#include "common/image/image_codec.h"
#include "common/tar/tar_format.h"
#include "trainer/data/synthetic_shapes.h"

namespace dd::dataset::testing {

std::string NewTempDir(const std::string& name) {
  std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& data) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << data;
}

std::string ImageBytes(int index, const std::string& ext) {
  ShapeSample s = RenderShapeSample(11, index, 48, 40);
  return ext == "png" ? *EncodePng(s.image) : *EncodeJpeg(s.image, 90);
}

std::string Caption(int index) { return RenderShapeSample(11, index, 8, 8).caption; }

void WritePair(const std::string& dir, const std::string& stem, const std::string& ext,
               int index) {
  WriteFile(dir + "/" + stem + "." + ext, ImageBytes(index, ext));
  WriteFile(dir + "/" + stem + ".txt", Caption(index));
}

void WriteTar(const std::string& path,
              const std::vector<std::pair<std::string, std::string>>& members) {
  std::string out;
  for (const auto& [name, data] : members) {
    out += *tar::MakeFileHeader(name, data.size());
    out += data;
    out.append(tar::PaddingFor(data.size()), '\0');
  }
  out.append(tar::kTrailerSize, '\0');
  WriteFile(path, out);
}

std::vector<std::pair<std::string, std::string>> ShardMembers(int first_index, int n) {
  std::vector<std::pair<std::string, std::string>> members;
  for (int i = first_index; i < first_index + n; ++i) {
    std::string key = absl::StrFormat("k%03d", i);
    members.push_back({key + ".jpg", ImageBytes(i, "jpg")});
    members.push_back({key + ".txt", Caption(i)});
  }
  return members;
}

}  // namespace dd::dataset::testing
