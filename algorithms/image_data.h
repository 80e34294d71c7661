// What the image recipes (supervised, kd, byol, mocov3, blockwise) share:
// 28x28 single-channel images with 10 classes, from Fashion-MNIST (Debian's
// dataset-fashion-mnist) or synthetic; augmented views for self-supervised
// methods; top-1 and linear-probe evaluation on the test split. A recipe on
// other data brings its own source instead.
#ifndef TSPIPE_ALGORITHMS_IMAGE_DATA_H_
#define TSPIPE_ALGORITHMS_IMAGE_DATA_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "algorithms/augment.h"
#include "engine/recipe.h"
#include "models/resnet.h"

namespace tspipe {

// The real data set's name in DataRequest::data.
extern const char kFashionMnist[];

struct ImageDataOptions {
  // 0: batches of the images. n > 0: n augmented views of each image
  // (Augment, seeded with DataRequest::seed + 1) instead, as
  // self-supervised methods train; labels still travel as targets.
  int views = 0;
  AugmentOptions augment;
};

// Synthetic batches (random images and labels drawn from the global
// generator, `num_batches` of them, cycled) or Fashion-MNIST's train split
// (the first `train_samples` images if > 0), reshuffled every epoch with
// DataRequest::seed, the incomplete tail of an epoch dropped. Throws
// std::runtime_error naming a missing file and the package that installs it.
std::unique_ptr<BatchSource> MakeImageData(const DataRequest& request,
                                           const ImageDataOptions& options);

// `samples` random images, once per view (once when views == 0): the
// profiling input.
Activation ImageExample(int64_t samples, int views);

// Top-1 accuracy of the whole student on the test split (the first
// `test_limit` images if > 0).
double TestTop1(const EvalContext& context);
// The logits of student `model` on the test split (so limited), on the
// CPU, and the labels they predict.
torch::Tensor TestLogits(const EvalContext& context, int model);
torch::Tensor TestLabels(const EvalContext& context);

// Top-1 test accuracy of a linear classifier fitted on the frozen features
// of the student's first `encoder_blocks` blocks (eval mode, no
// augmentation): train split -> test split, each limited as requested.
double LinearProbeTop1(const EvalContext& context, int encoder_blocks);

// Options "<prefix>widths" and "<prefix>blocks" for a ResNet shape (`what`
// names the network in the help text), and the shape they give. Throws
// std::invalid_argument when the two lists differ in length.
std::vector<OptionSpec> ResNetShapeOptions(const std::string& prefix, const std::string& what,
                                           const std::vector<int>& widths,
                                           const std::vector<int>& blocks);
ResNetOptions ResNetShapeFrom(const OptionValues& values, const std::string& prefix,
                              const std::string& owner);
// "widths 8,16, blocks 1,1": a shape in checkpoint messages.
std::string DescribeShape(const ResNetOptions& shape);

}  // namespace tspipe

#endif  // TSPIPE_ALGORITHMS_IMAGE_DATA_H_
