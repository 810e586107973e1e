// Where training samples come from: a folder of image + caption pairs
// (photo.jpg + photo.txt, any depth), WebDataset tar shards, or the chunk
// files the dataset service serves (tar files in the same framing). The
// distributed trainer reads downloaded chunks through this same code.
//
// Listing reads only directory entries and tar headers; image bytes are read
// later, by range, on the data loader's threads. Pure: no torch types.
#ifndef TRAINER_DATA_SAMPLE_SOURCE_H_
#define TRAINER_DATA_SAMPLE_SOURCE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dd::data {

// A byte range in a file (a whole file, or one member of a tar file).
struct FileRange {
  std::string path;
  uint64_t offset = 0;
  uint64_t size = 0;
};

struct SampleRef {
  std::string key;        // "dir/photo" or "shard.tar:000123"
  FileRange image;
  bool has_caption = false;
  FileRange caption;
};

struct SourceListing {
  std::vector<SampleRef> samples;  // sorted by key
  int64_t without_caption = 0;     // trained with an empty caption
  int64_t skipped_files = 0;       // unreadable tar files, orphan captions
  std::vector<std::string> notes;  // what was skipped and why (first 20)
};

// Lists the samples under `path`: a folder (recursively; .tar files inside
// are read as shards) or a single .tar file. Image members are recognised by
// extension (.jpg .jpeg .png .webp, any case); a sample's caption is the .txt
// with the same key. NotFound for a missing path; FailedPrecondition when no
// image is found at all.
absl::StatusOr<SourceListing> ListSamples(const std::string& path);

// Reads a range (at most `max_bytes`, ResourceExhausted past it). DataLoss
// when the file is shorter than the range says (changed since listing).
absl::StatusOr<std::string> ReadRange(const FileRange& range, uint64_t max_bytes = 256 << 20);

// A caption made safe to train on: invalid UTF-8 sequences replaced by
// U+FFFD, surrounding whitespace trimmed.
std::string CleanCaption(const std::string& raw);

}  // namespace dd::data

#endif  // TRAINER_DATA_SAMPLE_SOURCE_H_
