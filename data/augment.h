// Two-view augmentations for self-supervised learning on small grey images,
// done with tensor ops on a whole batch (one random draw per sample):
// random resized crop, horizontal flip, brightness and contrast jitter and
// Gaussian noise (a cheap stand-in for blur at 28x28).
#ifndef TSPIPE_DATA_AUGMENT_H_
#define TSPIPE_DATA_AUGMENT_H_

#include <torch/torch.h>

namespace tspipe {

struct AugmentOptions {
  // Crop area as a fraction of the image, drawn uniformly in [min_scale, 1];
  // aspect ratio log-uniform in [1/aspect, aspect]; resized back to the input
  // size.
  double min_scale = 0.3;
  double aspect = 4.0 / 3.0;
  double flip_probability = 0.5;
  // x -> (x - mean) * c + mean + b, c in [1 - contrast, 1 + contrast],
  // b in [-brightness, brightness] (in normalised pixel units).
  double brightness = 0.4;
  double contrast = 0.4;
  // Noise standard deviation drawn in [0, noise].
  double noise = 0.1;
};

// One augmented view of `images` [N, C, H, W] (float). Draws every random
// number from `generator`, so a seeded generator gives the same views.
torch::Tensor Augment(const torch::Tensor& images, const AugmentOptions& options,
                      at::Generator& generator);

}  // namespace tspipe

#endif  // TSPIPE_DATA_AUGMENT_H_
