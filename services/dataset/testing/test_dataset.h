// Test-only helpers that write real dataset files: JPEG and PNG images
// encoded by libjpeg-turbo and libpng, captions, and WebDataset shards.
#ifndef SERVICES_DATASET_TESTING_TEST_DATASET_H_
#define SERVICES_DATASET_TESTING_TEST_DATASET_H_

#include <string>
#include <utility>
#include <vector>

namespace dd::dataset::testing {

// A fresh empty folder under TEST_TMPDIR.
std::string NewTempDir(const std::string& name);

std::string ReadFile(const std::string& path);
void WriteFile(const std::string& path, const std::string& data);

// Encoded synthetic image `index` (jpg or png) and its caption.
std::string ImageBytes(int index, const std::string& ext);
std::string Caption(int index);

// Writes dir/stem.<ext> and dir/stem.txt (creating dir).
void WritePair(const std::string& dir, const std::string& stem, const std::string& ext,
               int index);

// Writes a tar archive of (name, bytes) members in canonical ustar framing.
void WriteTar(const std::string& path,
              const std::vector<std::pair<std::string, std::string>>& members);

// Members of a canonical WebDataset shard with `n` samples (keys k000, ...).
std::vector<std::pair<std::string, std::string>> ShardMembers(int first_index, int n);

}  // namespace dd::dataset::testing

#endif  // SERVICES_DATASET_TESTING_TEST_DATASET_H_
