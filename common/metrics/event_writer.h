// Training metrics as files people look at: a TensorBoard event file
// (scalars and images; `tensorboard --logdir` reads it) and a JSON-lines log
// (one object per step, for scripts and plots).
//
// Event files are TFRecord streams: each record is length (u64 LE), masked
// CRC-32C of the length, the serialized Event, masked CRC-32C of it. Debian
// packages no CRC-32C library for C++, so the 30-line table version is here.
#ifndef COMMON_METRICS_EVENT_WRITER_H_
#define COMMON_METRICS_EVENT_WRITER_H_

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/image/image_codec.h"

namespace dd::metrics {

// CRC-32C (Castagnoli) of `data`, and TFRecord's masked form of it.
uint32_t Crc32c(absl::string_view data);
uint32_t MaskedCrc32c(absl::string_view data);

// One TFRecord: framing around `payload`.
std::string FrameRecord(absl::string_view payload);

class EventWriter {
 public:
  // Creates `dir` if needed and a new events.out.tfevents.<time>.<host>
  // file in it, starting with the file_version record. PermissionDenied /
  // NotFound naming the folder when it cannot be written.
  static absl::StatusOr<std::unique_ptr<EventWriter>> Create(const std::string& dir,
                                                             const std::string& suffix = "");
  ~EventWriter();

  absl::Status AddScalar(const std::string& tag, int64_t step, double value);
  absl::Status AddImage(const std::string& tag, int64_t step, const RgbImage& image);
  // Makes everything written so far durable (fflush + fsync).
  absl::Status Flush();

  const std::string& path() const { return path_; }

 private:
  EventWriter(std::string path, FILE* file) : path_(std::move(path)), file_(file) {}
  absl::Status Write(const std::string& serialized_event);

  const std::string path_;
  FILE* file_;
};

// Appends one JSON object per line to a file (created if missing).
class JsonlWriter {
 public:
  static absl::StatusOr<std::unique_ptr<JsonlWriter>> Open(const std::string& path);
  ~JsonlWriter();
  // Writes {"k": v, ...} with numbers printed at full precision and the
  // string fields escaped, then flushes.
  absl::Status Write(const std::map<std::string, double>& numbers,
                     const std::map<std::string, std::string>& strings = {});

 private:
  explicit JsonlWriter(FILE* file) : file_(file) {}
  FILE* file_;
};

}  // namespace dd::metrics

#endif  // COMMON_METRICS_EVENT_WRITER_H_
