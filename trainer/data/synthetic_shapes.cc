#include "trainer/data/synthetic_shapes.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"

namespace dd {
namespace {

struct Colour {
  const char* name;
  uint8_t rgb[3];
};

constexpr Colour kColours[] = {
    {"red", {220, 30, 30}},    {"green", {30, 170, 50}},   {"blue", {30, 60, 220}},
    {"yellow", {240, 220, 40}}, {"white", {245, 245, 245}}, {"black", {15, 15, 15}},
    {"orange", {245, 140, 20}}, {"purple", {140, 40, 180}},
};
constexpr int kNumColours = sizeof(kColours) / sizeof(kColours[0]);
constexpr const char* kShapes[] = {"circle", "square", "triangle"};

// Signed distance-like coverage of pixel centre (px, py) by the shape, in
// [0, 1], with a one-pixel soft edge.
double Coverage(int shape, double px, double py, double cx, double cy, double r) {
  double d;  // > 0 inside, in pixels from the edge
  if (shape == 0) {
    d = r - std::hypot(px - cx, py - cy);
  } else if (shape == 1) {
    d = r - std::max(std::abs(px - cx), std::abs(py - cy));
  } else {
    // Upward equilateral-ish triangle inscribed in the circle of radius r.
    double top = cy - r, bottom = cy + r * 0.6;
    double half_width_at = (py - top) / (bottom - top) * r * 0.95;
    d = std::min({py - top, bottom - py, half_width_at - std::abs(px - cx)});
  }
  return std::clamp(d + 0.5, 0.0, 1.0);
}

}  // namespace

ShapeSample RenderShapeSample(uint64_t seed, uint64_t index, int width, int height) {
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + index);
  int shape = static_cast<int>(rng() % 3);
  int fg = static_cast<int>(rng() % kNumColours);
  int bg = static_cast<int>(rng() % (kNumColours - 1));
  if (bg >= fg) ++bg;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  double side = std::min(width, height);
  double r = side * (0.15 + 0.15 * unit(rng));
  double cx = r + (width - 2 * r) * unit(rng);
  double cy = r + (height - 2 * r) * unit(rng);

  ShapeSample sample;
  sample.image.width = width;
  sample.image.height = height;
  sample.image.pixels.resize(static_cast<size_t>(width) * height * 3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      double a = Coverage(shape, x + 0.5, y + 0.5, cx, cy, r);
      uint8_t* p = &sample.image.pixels[(static_cast<size_t>(y) * width + x) * 3];
      for (int c = 0; c < 3; ++c) {
        p[c] = static_cast<uint8_t>(
            std::lround(a * kColours[fg].rgb[c] + (1 - a) * kColours[bg].rgb[c]));
      }
    }
  }
  const char* article = kColours[fg].name[0] == 'o' ? "an " : "a ";
  sample.caption = absl::StrCat(article, kColours[fg].name, " ", kShapes[shape], " on a ",
                                kColours[bg].name, " background");
  return sample;
}

std::vector<std::string> ShapeVocabulary() {
  std::vector<std::string> words = {"a", "an", "on", "background"};
  for (const Colour& c : kColours) words.push_back(c.name);
  for (const char* shape : kShapes) words.push_back(shape);
  return words;
}

}  // namespace dd
