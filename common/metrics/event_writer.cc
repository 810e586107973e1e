#include "common/metrics/event_writer.h"

#include <unistd.h>

#include <array>
#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/io/file_util.h"
#include "common/metrics/tensorboard_event.pb.h"

namespace dd::metrics {
namespace {

std::array<uint32_t, 256> MakeTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // reflected Castagnoli
    t[i] = c;
  }
  return t;
}

double Now() { return absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()); }

}  // namespace

uint32_t Crc32c(absl::string_view data) {
  static const std::array<uint32_t, 256> table = MakeTable();
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : data) c = table[(c ^ b) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t MaskedCrc32c(absl::string_view data) {
  uint32_t c = Crc32c(data);
  return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

std::string FrameRecord(absl::string_view payload) {
  auto le = [](uint64_t v, int bytes) {
    std::string s(bytes, '\0');
    for (int i = 0; i < bytes; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
    return s;
  };
  std::string length = le(payload.size(), 8);
  return absl::StrCat(length, le(MaskedCrc32c(length), 4), payload, le(MaskedCrc32c(payload), 4));
}

absl::StatusOr<std::unique_ptr<EventWriter>> EventWriter::Create(const std::string& dir,
                                                                const std::string& suffix) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  std::string path = absl::StrCat(dir, "/events.out.tfevents.", static_cast<int64_t>(Now()), ".",
                                  host, suffix);
  FILE* f = std::fopen(path.c_str(), "ab");
  if (f == nullptr) return ErrnoToStatus(errno, "open", path);
  std::unique_ptr<EventWriter> w(new EventWriter(path, f));
  tensorboard::Event e;
  e.set_wall_time(Now());
  e.set_file_version("brain.Event:2");
  if (absl::Status s = w->Write(e.SerializeAsString()); !s.ok()) return s;
  return w;
}

EventWriter::~EventWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status EventWriter::Write(const std::string& serialized_event) {
  std::string record = FrameRecord(serialized_event);
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size()) {
    return ErrnoToStatus(errno, "write", path_);
  }
  std::fflush(file_);
  return absl::OkStatus();
}

absl::Status EventWriter::AddScalar(const std::string& tag, int64_t step, double value) {
  tensorboard::Event e;
  e.set_wall_time(Now());
  e.set_step(step);
  auto* v = e.mutable_summary()->add_value();
  v->set_tag(tag);
  v->set_simple_value(static_cast<float>(value));
  return Write(e.SerializeAsString());
}

absl::Status EventWriter::AddImage(const std::string& tag, int64_t step, const RgbImage& image) {
  auto png = EncodePng(image);
  if (!png.ok()) return png.status();
  tensorboard::Event e;
  e.set_wall_time(Now());
  e.set_step(step);
  auto* v = e.mutable_summary()->add_value();
  v->set_tag(tag);
  auto* img = v->mutable_image();
  img->set_height(image.height);
  img->set_width(image.width);
  img->set_colorspace(3);
  img->set_encoded_image_string(*png);
  return Write(e.SerializeAsString());
}

absl::Status EventWriter::Flush() {
  if (std::fflush(file_) != 0 || fsync(fileno(file_)) != 0) return ErrnoToStatus(errno, "flush", path_);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<JsonlWriter>> JsonlWriter::Open(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  FILE* f = std::fopen(path.c_str(), "ab");
  if (f == nullptr) return ErrnoToStatus(errno, "open", path);
  return std::unique_ptr<JsonlWriter>(new JsonlWriter(f));
}

JsonlWriter::~JsonlWriter() { std::fclose(file_); }

absl::Status JsonlWriter::Write(const std::map<std::string, double>& numbers,
                                const std::map<std::string, std::string>& strings) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : numbers) {
    if (std::isfinite(v) && v == std::floor(v) && std::abs(v) < 9.0e15) {
      j[k] = static_cast<int64_t>(v);  // steps and counts print as integers
    } else if (std::isfinite(v)) {
      j[k] = v;
    } else {
      j[k] = nullptr;  // JSON has no NaN
    }
  }
  for (const auto& [k, v] : strings) j[k] = v;
  std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0) {
    return absl::DataLossError("cannot append to the metrics log");
  }
  return absl::OkStatus();
}

}  // namespace dd::metrics
