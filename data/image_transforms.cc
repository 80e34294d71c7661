#include "data/image_transforms.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

namespace tspipe {
namespace {

// One output axis of an antialiased bilinear resize: for output index i,
// taps [first[i], first[i] + count[i]) of the source axis with weights
// w[i * max_taps + k]. As aten's upsample_bilinear2d_aa and Pillow's
// ImagingResample compute them: the triangle filter stretched by the scale
// when shrinking, clipped to the source region and renormalised.
struct AxisTaps {
  std::vector<int> first, count;
  std::vector<float> weights;
  int max_taps = 0;
};

AxisTaps ComputeTaps(int region_start, int region_size, int out_size, int out_first, int out_count) {
  const double scale = static_cast<double>(region_size) / out_size;
  const double support = scale >= 1.0 ? scale : 1.0;
  const double inv = scale >= 1.0 ? 1.0 / scale : 1.0;
  AxisTaps t;
  t.max_taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out_count);
  t.count.resize(out_count);
  t.weights.assign(static_cast<size_t>(out_count) * t.max_taps, 0.0f);
  for (int o = 0; o < out_count; ++o) {
    const double center = scale * (o + out_first + 0.5);
    const int lo = std::max(static_cast<int>(center - support + 0.5), 0);
    const int hi = std::min(static_cast<int>(center + support + 0.5), region_size);
    const int n = std::min(hi - lo, t.max_taps);
    double total = 0;
    std::vector<double> w(n);
    for (int k = 0; k < n; ++k) {
      const double x = std::abs((k + lo - center + 0.5) * inv);
      w[k] = x < 1.0 ? 1.0 - x : 0.0;
      total += w[k];
    }
    t.first[o] = region_start + lo;
    t.count[o] = n;
    for (int k = 0; k < n; ++k) {
      t.weights[static_cast<size_t>(o) * t.max_taps + k] =
          static_cast<float>(total > 0 ? w[k] / total : 0.0);
    }
  }
  return t;
}

// Output rows [y0, y0 + ny) and columns [x0, x0 + nx) of the region `box`
// of a source resized to out_h x out_w: rows first, then columns, in float.
// `pixel(y, x, c)` reads the source; `scale` multiplies every result.
template <typename Pixel>
FloatImage Resample(int channels, const CropBox& box, int out_h, int out_w, int y0, int x0, int ny,
                    int nx, float scale, Pixel pixel) {
  if (box.height <= 0 || box.width <= 0 || out_h <= 0 || out_w <= 0) {
    throw std::invalid_argument("resize: empty region or output");
  }
  const AxisTaps rows = ComputeTaps(box.top, box.height, out_h, y0, ny);
  const AxisTaps cols = ComputeTaps(box.left, box.width, out_w, x0, nx);
  // Horizontal pass over the source rows the vertical taps need.
  const int row_lo = rows.first.front();
  const int row_hi = rows.first.back() + rows.count.back();
  const int tmp_rows = row_hi - row_lo;
  std::vector<float> tmp(static_cast<size_t>(channels) * tmp_rows * nx);
  for (int y = 0; y < tmp_rows; ++y) {
    for (int x = 0; x < nx; ++x) {
      const float* w = cols.weights.data() + static_cast<size_t>(x) * cols.max_taps;
      for (int c = 0; c < channels; ++c) {
        float sum = 0;
        for (int k = 0; k < cols.count[x]; ++k) sum += w[k] * pixel(row_lo + y, cols.first[x] + k, c);
        tmp[(static_cast<size_t>(c) * tmp_rows + y) * nx + x] = sum;
      }
    }
  }
  FloatImage out;
  out.channels = channels;
  out.height = ny;
  out.width = nx;
  out.data.resize(static_cast<size_t>(channels) * ny * nx);
  for (int c = 0; c < channels; ++c) {
    const float* plane = tmp.data() + static_cast<size_t>(c) * tmp_rows * nx;
    float* dst = out.plane(c);
    for (int y = 0; y < ny; ++y) {
      const float* w = rows.weights.data() + static_cast<size_t>(y) * rows.max_taps;
      float* row = dst + static_cast<size_t>(y) * nx;
      std::fill(row, row + nx, 0.0f);
      for (int k = 0; k < rows.count[y]; ++k) {
        const float* src = plane + static_cast<size_t>(rows.first[y] + k - row_lo) * nx;
        for (int x = 0; x < nx; ++x) row[x] += w[k] * src[x];
      }
      for (int x = 0; x < nx; ++x) row[x] *= scale;
    }
  }
  return out;
}

void CheckBox(const CropBox& b, int height, int width) {
  if (b.top < 0 || b.left < 0 || b.height <= 0 || b.width <= 0 || b.top + b.height > height ||
      b.left + b.width > width) {
    throw std::invalid_argument("crop " + std::to_string(b.width) + "x" + std::to_string(b.height) +
                                "+" + std::to_string(b.left) + "+" + std::to_string(b.top) +
                                " does not fit a " + std::to_string(width) + "x" +
                                std::to_string(height) + " image");
  }
}

float Luminance(float r, float g, float b) { return 0.2989f * r + 0.587f * g + 0.114f * b; }

// Python's round(): halves to even.
int RoundHalfEven(double v) { return static_cast<int>(std::nearbyint(v)); }

// Reflect index (edge not repeated), folded as often as needed.
int Reflect(int i, int n) {
  if (n == 1) return 0;
  const int period = 2 * (n - 1);
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - i;
}

double Uniform(std::mt19937_64& rng, double lo, double hi) {
  return lo + (hi - lo) * std::generate_canonical<double, 53>(rng);
}

}  // namespace

FloatImage ResizedCrop(const RgbImage& image, const CropBox& box, int out_height, int out_width) {
  CheckBox(box, image.height, image.width);
  const uint8_t* p = image.pixels.data();
  const int w = image.width;
  return Resample(3, box, out_height, out_width, 0, 0, out_height, out_width, 1.0f / 255.0f,
                  [p, w](int y, int x, int c) {
                    return static_cast<float>(p[(static_cast<size_t>(y) * w + x) * 3 + c]);
                  });
}

FloatImage ResizedCrop(const FloatImage& image, const CropBox& box, int out_height, int out_width) {
  CheckBox(box, image.height, image.width);
  return Resample(image.channels, box, out_height, out_width, 0, 0, out_height, out_width, 1.0f,
                  [&image](int y, int x, int c) {
                    return image.plane(c)[static_cast<size_t>(y) * image.width + x];
                  });
}

FloatImage ToFloat(const RgbImage& image) {
  FloatImage out;
  out.height = image.height;
  out.width = image.width;
  out.data.resize(static_cast<size_t>(3) * image.height * image.width);
  const size_t n = static_cast<size_t>(image.height) * image.width;
  for (int c = 0; c < 3; ++c) {
    float* dst = out.plane(c);
    for (size_t i = 0; i < n; ++i) dst[i] = image.pixels[3 * i + c] / 255.0f;
  }
  return out;
}

FloatImage ResizeCenterCrop(const RgbImage& image, int resize, int crop) {
  const int h = image.height, w = image.width;
  const int short_side = std::min(h, w), long_side = std::max(h, w);
  // torchvision: int(size * long / short), in Python's float arithmetic.
  const int new_long = static_cast<int>(static_cast<double>(resize) * long_side / short_side);
  const int new_h = h <= w ? resize : new_long;
  const int new_w = h <= w ? new_long : resize;
  if (crop > new_h || crop > new_w) {
    throw std::invalid_argument("centre crop " + std::to_string(crop) + " is larger than the " +
                                std::to_string(new_w) + "x" + std::to_string(new_h) + " resize");
  }
  const int top = RoundHalfEven((new_h - crop) / 2.0);
  const int left = RoundHalfEven((new_w - crop) / 2.0);
  const uint8_t* p = image.pixels.data();
  return Resample(3, CropBox{0, 0, h, w}, new_h, new_w, top, left, crop, crop, 1.0f / 255.0f,
                  [p, w](int y, int x, int c) {
                    return static_cast<float>(p[(static_cast<size_t>(y) * w + x) * 3 + c]);
                  });
}

void HorizontalFlip(FloatImage& image) {
  for (int c = 0; c < image.channels; ++c) {
    for (int y = 0; y < image.height; ++y) {
      float* row = image.plane(c) + static_cast<size_t>(y) * image.width;
      std::reverse(row, row + image.width);
    }
  }
}

void AdjustBrightness(FloatImage& image, float factor) {
  for (float& v : image.data) v = std::clamp(v * factor, 0.0f, 1.0f);
}

void AdjustContrast(FloatImage& image, float factor) {
  const size_t n = static_cast<size_t>(image.height) * image.width;
  double sum = 0;
  if (image.channels == 3) {
    const float *r = image.plane(0), *g = image.plane(1), *b = image.plane(2);
    for (size_t i = 0; i < n; ++i) sum += Luminance(r[i], g[i], b[i]);
  } else {
    for (size_t i = 0; i < n; ++i) sum += image.data[i];
  }
  const float mean = static_cast<float>(sum / n);
  const float offset = (1.0f - factor) * mean;
  for (float& v : image.data) v = std::clamp(v * factor + offset, 0.0f, 1.0f);
}

void AdjustSaturation(FloatImage& image, float factor) {
  if (image.channels != 3) return;  // Grey stays grey, as torchvision.
  const size_t n = static_cast<size_t>(image.height) * image.width;
  float *r = image.plane(0), *g = image.plane(1), *b = image.plane(2);
  for (size_t i = 0; i < n; ++i) {
    const float l = (1.0f - factor) * Luminance(r[i], g[i], b[i]);
    r[i] = std::clamp(r[i] * factor + l, 0.0f, 1.0f);
    g[i] = std::clamp(g[i] * factor + l, 0.0f, 1.0f);
    b[i] = std::clamp(b[i] * factor + l, 0.0f, 1.0f);
  }
}

void AdjustHue(FloatImage& image, float shift) {
  if (image.channels != 3) return;
  if (shift < -0.5f || shift > 0.5f) {
    throw std::invalid_argument("hue shift " + std::to_string(shift) + " is outside [-0.5, 0.5]");
  }
  const size_t n = static_cast<size_t>(image.height) * image.width;
  float *r = image.plane(0), *g = image.plane(1), *b = image.plane(2);
  for (size_t i = 0; i < n; ++i) {
    // torchvision's _rgb_to_hsv / _hsv_to_rgb (after Pillow's Convert.c).
    const float maxc = std::max({r[i], g[i], b[i]}), minc = std::min({r[i], g[i], b[i]});
    const bool flat = maxc == minc;
    const float range = maxc - minc;
    const float s = range / (flat ? 1.0f : maxc);
    const float div = flat ? 1.0f : range;
    const float rc = (maxc - r[i]) / div, gc = (maxc - g[i]) / div, bc = (maxc - b[i]) / div;
    float h;
    if (maxc == r[i]) {
      h = bc - gc;
    } else if (maxc == g[i]) {
      h = 2.0f + rc - bc;
    } else {
      h = 4.0f + gc - rc;
    }
    h = std::fmod(h * (1.0f / 6.0f) + 1.0f, 1.0f);
    h = h + shift;
    h = h - std::floor(h);  // Python's % 1.0: into [0, 1).
    const float v = maxc;
    const float h6 = h * 6.0f;
    const float fl = std::floor(h6);
    const float f = h6 - fl;
    const int sector = ((static_cast<int>(fl) % 6) + 6) % 6;
    const float q = std::clamp((1.0f - s * f) * v, 0.0f, 1.0f);
    const float t = std::clamp((s * f + (1.0f - s)) * v, 0.0f, 1.0f);
    const float p = std::clamp((1.0f - s) * v, 0.0f, 1.0f);
    const float vpqt[4] = {v, p, q, t};
    static constexpr int kSelect[3][6] = {{0, 2, 1, 1, 3, 0}, {3, 0, 0, 2, 1, 1}, {1, 1, 3, 0, 0, 2}};
    r[i] = vpqt[kSelect[0][sector]];
    g[i] = vpqt[kSelect[1][sector]];
    b[i] = vpqt[kSelect[2][sector]];
  }
}

void ToGrayscale(FloatImage& image, int channels) {
  const size_t n = static_cast<size_t>(image.height) * image.width;
  if (image.channels == 1) {
    if (channels == 3) {
      image.data.resize(3 * n);
      std::copy(image.data.begin(), image.data.begin() + n, image.data.begin() + n);
      std::copy(image.data.begin(), image.data.begin() + n, image.data.begin() + 2 * n);
    }
    image.channels = channels;
    return;
  }
  float *r = image.plane(0), *g = image.plane(1), *b = image.plane(2);
  for (size_t i = 0; i < n; ++i) r[i] = Luminance(r[i], g[i], b[i]);
  if (channels == 1) {
    image.data.resize(n);
    image.channels = 1;
  } else {
    std::copy(r, r + n, g);
    std::copy(r, r + n, b);
  }
}

void GaussianBlur(FloatImage& image, int kernel, float sigma) {
  if (kernel <= 0 || kernel % 2 == 0 || !(sigma > 0)) {
    throw std::invalid_argument("Gaussian blur needs an odd positive kernel and sigma > 0, got " +
                                std::to_string(kernel) + " and " + std::to_string(sigma));
  }
  // torchvision's kernel: exp(-x^2 / (2 sigma^2)) at x = -(k-1)/2 .. (k-1)/2,
  // normalised.
  std::vector<float> w(kernel);
  double total = 0;
  const int half = kernel / 2;
  for (int k = 0; k < kernel; ++k) {
    const double x = k - half;
    w[k] = static_cast<float>(std::exp(-x * x / (2.0 * sigma * sigma)));
    total += w[k];
  }
  for (float& v : w) v = static_cast<float>(v / total);
  const int h = image.height, wd = image.width;
  std::vector<float> tmp(static_cast<size_t>(h) * wd);
  std::vector<int> xs(static_cast<size_t>(wd) * kernel), ys(static_cast<size_t>(h) * kernel);
  for (int x = 0; x < wd; ++x) {
    for (int k = 0; k < kernel; ++k) xs[static_cast<size_t>(x) * kernel + k] = Reflect(x + k - half, wd);
  }
  for (int y = 0; y < h; ++y) {
    for (int k = 0; k < kernel; ++k) ys[static_cast<size_t>(y) * kernel + k] = Reflect(y + k - half, h);
  }
  for (int c = 0; c < image.channels; ++c) {
    float* plane = image.plane(c);
    for (int y = 0; y < h; ++y) {
      const float* row = plane + static_cast<size_t>(y) * wd;
      for (int x = 0; x < wd; ++x) {
        const int* ix = xs.data() + static_cast<size_t>(x) * kernel;
        float sum = 0;
        for (int k = 0; k < kernel; ++k) sum += w[k] * row[ix[k]];
        tmp[static_cast<size_t>(y) * wd + x] = sum;
      }
    }
    for (int y = 0; y < h; ++y) {
      float* out = plane + static_cast<size_t>(y) * wd;
      std::fill(out, out + wd, 0.0f);
      const int* iy = ys.data() + static_cast<size_t>(y) * kernel;
      for (int k = 0; k < kernel; ++k) {
        const float* src = tmp.data() + static_cast<size_t>(iy[k]) * wd;
        for (int x = 0; x < wd; ++x) out[x] += w[k] * src[x];
      }
    }
  }
}

void Solarize(FloatImage& image, float threshold) {
  for (float& v : image.data) {
    if (v >= threshold) v = 1.0f - v;
  }
}

void Normalize(FloatImage& image, const std::vector<float>& mean, const std::vector<float>& std) {
  const size_t n = static_cast<size_t>(image.height) * image.width;
  for (int c = 0; c < image.channels; ++c) {
    const float m = mean.at(c), inv = 1.0f / std.at(c);
    float* p = image.plane(c);
    for (size_t i = 0; i < n; ++i) p[i] = (p[i] - m) * inv;
  }
}

CropBox RandomResizedCropBox(int height, int width, double min_scale, double max_scale,
                             std::mt19937_64& rng) {
  const double area = static_cast<double>(height) * width;
  const double log_lo = std::log(3.0 / 4.0), log_hi = std::log(4.0 / 3.0);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * Uniform(rng, min_scale, max_scale);
    const double ratio = std::exp(Uniform(rng, log_lo, log_hi));
    const int w = RoundHalfEven(std::sqrt(target * ratio));
    const int h = RoundHalfEven(std::sqrt(target / ratio));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const int top = std::uniform_int_distribution<int>(0, height - h)(rng);
      const int left = std::uniform_int_distribution<int>(0, width - w)(rng);
      return {top, left, h, w};
    }
  }
  // The central crop at the nearest allowed aspect ratio.
  const double in_ratio = static_cast<double>(width) / height;
  int w = width, h = height;
  if (in_ratio < 3.0 / 4.0) {
    h = RoundHalfEven(w / (3.0 / 4.0));
  } else if (in_ratio > 4.0 / 3.0) {
    w = RoundHalfEven(h * (4.0 / 3.0));
  }
  return {(height - h) / 2, (width - w) / 2, h, w};
}

FloatImage ApplyPipeline(const RgbImage& image, ImagePipeline pipeline, int size, int channels,
                         std::mt19937_64& rng) {
  FloatImage out;
  if (pipeline == ImagePipeline::kEval) {
    out = ResizeCenterCrop(image, static_cast<int>(size / 0.875), size);
  } else if (pipeline == ImagePipeline::kResize) {
    out = ResizedCrop(image, CropBox{0, 0, image.height, image.width}, size, size);
  } else {
    out = ResizedCrop(image, RandomResizedCropBox(image.height, image.width, 0.08, 1.0, rng), size,
                      size);
    if (Uniform(rng, 0, 1) < 0.5) HorizontalFlip(out);
  }
  if (pipeline == ImagePipeline::kByolView1 || pipeline == ImagePipeline::kByolView2) {
    // BYOL (Grill et al. 2020, table 6), as MoCo v3 uses it too.
    const bool first = pipeline == ImagePipeline::kByolView1;
    if (Uniform(rng, 0, 1) < 0.8) {
      int order[4] = {0, 1, 2, 3};
      std::shuffle(order, order + 4, rng);
      const float brightness = static_cast<float>(Uniform(rng, 0.6, 1.4));
      const float contrast = static_cast<float>(Uniform(rng, 0.6, 1.4));
      const float saturation = static_cast<float>(Uniform(rng, 0.8, 1.2));
      const float hue = static_cast<float>(Uniform(rng, -0.1, 0.1));
      for (int op : order) {
        if (op == 0) AdjustBrightness(out, brightness);
        if (op == 1) AdjustContrast(out, contrast);
        if (op == 2) AdjustSaturation(out, saturation);
        if (op == 3) AdjustHue(out, hue);
      }
    }
    if (Uniform(rng, 0, 1) < 0.2) ToGrayscale(out, 3);
    if (Uniform(rng, 0, 1) < (first ? 1.0 : 0.1)) {
      // 23 pixels at 224: a tenth of the side, odd.
      GaussianBlur(out, (size / 10) | 1, static_cast<float>(Uniform(rng, 0.1, 2.0)));
    }
    if (Uniform(rng, 0, 1) < (first ? 0.0 : 0.2)) Solarize(out, 0.5f);
  }
  if (channels == 1) {
    ToGrayscale(out, 1);
    Normalize(out, {0.449f}, {0.226f});  // ImageNet's channel means, averaged.
  } else {
    Normalize(out, {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f});
  }
  return out;
}

std::mt19937_64 ImageGenerator(uint64_t seed, uint64_t epoch, uint64_t index, uint64_t view) {
  // SplitMix64 over the four, so that nearby indices give unrelated streams.
  auto mix = [](uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  uint64_t h = mix(seed);
  h = mix(h ^ epoch);
  h = mix(h ^ index);
  h = mix(h ^ view);
  return std::mt19937_64(h);
}

}  // namespace tspipe
