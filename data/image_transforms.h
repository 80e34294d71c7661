// Image augmentations as the methods define them, on one decoded image at a
// time, in plain C++ (no tensors: the loader's decoder threads run them
// without LibTorch's per-op overhead). Each operation computes what
// torchvision's functional transform computes on a float tensor in [0, 1]
// (torchvision.transforms.v2.functional; tests/golden/augment_ops.* holds
// its outputs, tools/make_augment_goldens.py makes them):
//   resized crop (bilinear, antialiased: the filter widens when shrinking,
//   as Pillow and antialias=True do), horizontal flip, brightness, contrast,
//   saturation, hue, grayscale, Gaussian blur (reflect padding), solarize,
//   normalize.
// The pipelines draw their parameters as torchvision's transforms draw them
// (RandomResizedCrop's ten tries and central fallback, ColorJitter's random
// order), from a generator seeded per image, so a resumed run sees the same
// pixels.
#ifndef TSPIPE_DATA_IMAGE_TRANSFORMS_H_
#define TSPIPE_DATA_IMAGE_TRANSFORMS_H_

#include <cstdint>
#include <random>
#include <vector>

#include "data/image_decode.h"

namespace tspipe {

// Planar (channel, row, column) float pixels, 1 or 3 channels.
struct FloatImage {
  int channels = 3;
  int height = 0;
  int width = 0;
  std::vector<float> data;
  float* plane(int c) { return data.data() + static_cast<size_t>(c) * height * width; }
  const float* plane(int c) const { return data.data() + static_cast<size_t>(c) * height * width; }
};

// The region of the source image a crop takes.
struct CropBox {
  int top = 0, left = 0, height = 0, width = 0;
};

// The crop of `image` (pixels / 255) resized to out_height x out_width.
FloatImage ResizedCrop(const RgbImage& image, const CropBox& box, int out_height, int out_width);
// Same on a float image (for tests and chains).
FloatImage ResizedCrop(const FloatImage& image, const CropBox& box, int out_height, int out_width);
FloatImage ToFloat(const RgbImage& image);

void HorizontalFlip(FloatImage& image);
void AdjustBrightness(FloatImage& image, float factor);
void AdjustContrast(FloatImage& image, float factor);
void AdjustSaturation(FloatImage& image, float factor);
// Rotates the hue by `shift` of a turn (in [-0.5, 0.5]) through HSV.
void AdjustHue(FloatImage& image, float shift);
// Luminance (0.2989 R + 0.587 G + 0.114 B) in every channel, or as the one
// channel when `channels` is 1.
void ToGrayscale(FloatImage& image, int channels = 3);
// `kernel` odd; reflect padding (mirrored without repeating the edge, and
// again for kernels wider than the image).
void GaussianBlur(FloatImage& image, int kernel, float sigma);
void Solarize(FloatImage& image, float threshold);
void Normalize(FloatImage& image, const std::vector<float>& mean, const std::vector<float>& std);

// torchvision's Resize(int) followed by CenterCrop: the shorter side to
// `resize`, the longer in proportion (truncated), then the centre
// `crop` x `crop` (offsets rounded half to even, as Python's round).
FloatImage ResizeCenterCrop(const RgbImage& image, int resize, int crop);

// RandomResizedCrop's choice of region (scale 0.08-1 of the area, aspect
// ratio log-uniform in 3/4-4/3; ten tries, then the central crop).
CropBox RandomResizedCropBox(int height, int width, double min_scale, double max_scale,
                             std::mt19937_64& rng);

// What the loader makes of an image.
enum class ImagePipeline {
  kTrain,      // Supervised and KD: RandomResizedCrop, flip.
  kEval,       // Resize to image_size / 0.875, centre crop.
  kResize,     // The whole image resized to image_size (no crop, no draws):
               // data sets already cropped, such as Fashion-MNIST's.
  kByolView1,  // BYOL / MoCo v3 first view: crop, flip, colour jitter
               // (p 0.8), grayscale (p 0.2), blur (p 1.0), no solarize.
  kByolView2,  // Second view: blur p 0.1, solarize p 0.2.
};

// The pipeline on `image`, ending in ImageNet's normalisation (or its grey
// mean for one channel); the result is `channels` x size x size.
FloatImage ApplyPipeline(const RgbImage& image, ImagePipeline pipeline, int size, int channels,
                         std::mt19937_64& rng);

// The generator for one image of one epoch and view: a hash of the four, so
// the draws do not depend on which thread decodes the image or when.
std::mt19937_64 ImageGenerator(uint64_t seed, uint64_t epoch, uint64_t index, uint64_t view);

}  // namespace tspipe

#endif  // TSPIPE_DATA_IMAGE_TRANSFORMS_H_
