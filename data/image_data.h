// Image batch sources: Fashion-MNIST (Debian's dataset-fashion-mnist;
// 28x28 single-channel images, 10 classes) or synthetic images, at the
// shape the network takes, as images or augmented views (data/augment.h)
// for self-supervised methods.
#ifndef TSPIPE_DATA_IMAGE_DATA_H_
#define TSPIPE_DATA_IMAGE_DATA_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "data/augment.h"
#include "core/batch_source.h"
#include "core/microbatch.h"
#include "data/image_shape.h"

namespace tspipe {

// The real data set's name in DataRequest::data.
extern const char kFashionMnist[];

struct ImageDataOptions {
  // 0: batches of the images. n > 0: n augmented views of each image
  // (Augment, seeded with DataRequest::seed + 1) instead, as
  // self-supervised methods train; labels still travel as targets.
  int views = 0;
  AugmentOptions augment;
  // Synthetic images are drawn at this shape, with labels below
  // num_classes; Fashion-MNIST's are resized to it (bilinear) and their
  // grey channel repeated, and need num_classes >= 10.
  ImageShape shape;
};

// Synthetic batches (random images and labels drawn from the global
// generator, `num_batches` of them, cycled) or Fashion-MNIST's train split
// (the first `train_samples` images if > 0), reshuffled every epoch with
// DataRequest::seed, the incomplete tail of an epoch dropped. Throws
// std::runtime_error naming a missing file and the package that installs it.
std::unique_ptr<BatchSource> MakeImageData(const DataRequest& request,
                                           const ImageDataOptions& options);

// `samples` random images of `shape`, once per view (once when views ==
// 0): the profiling input.
Activation ImageExample(int64_t samples, int views, const ImageShape& shape = {});

// Fashion-MNIST images [N, 1, 28, 28] at `shape`: resized (bilinear) and
// the channel repeated; the same tensor when the shape is 1x28x28.
torch::Tensor ToImageShape(const torch::Tensor& images, const ImageShape& shape);

// Throws std::invalid_argument when Fashion-MNIST's 10 classes do not fit
// `shape`.
void CheckFashionMnistFits(const ImageShape& shape);

// A Fashion-MNIST split as normalised float images [N, 1, 28, 28] and int64
// labels [N], read once per process (several trainers and evaluations of
// one run share it). `dir` empty: Debian's install location. Throws
// std::runtime_error like MakeImageData.
struct LabeledImages {
  torch::Tensor images;
  torch::Tensor labels;
};
std::shared_ptr<const LabeledImages> FashionMnistImages(const std::string& dir, bool train);

}  // namespace tspipe

#endif  // TSPIPE_DATA_IMAGE_DATA_H_
