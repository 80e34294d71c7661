// What the image recipes (supervised, kd, byol, mocov3, blockwise,
// codistill) share: their data (data/image_data.h: Fashion-MNIST or
// synthetic 28x28 images, optionally as augmented views), their profiling
// input, top-1 and linear-probe evaluation on the test split, and the
// options of a ResNet's shape. A recipe on other data derives from Recipe
// instead.
#ifndef TSPIPE_ALGORITHMS_IMAGE_RECIPE_H_
#define TSPIPE_ALGORITHMS_IMAGE_RECIPE_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "data/image_data.h"
#include "engine/recipe.h"
#include "models/resnet.h"

namespace tspipe {

// A recipe on images: data, profiling input and evaluation (top-1 of the
// whole student; override Evaluate for others).
class ImageRecipe : public Recipe {
 public:
  // `views`: 0 trains on the images; n > 0 on n augmented views of each
  // (self-supervised methods), as ImageDataOptions::views.
  explicit ImageRecipe(int views = 0) : views_(views) {}

  std::vector<std::string> DataSets() const override { return {kFashionMnist}; }
  std::unique_ptr<BatchSource> MakeData(const DataRequest& request) const override;
  Activation ExampleInput(int64_t samples) const override;
  Metrics Evaluate(const EvalContext& context) const override;

 private:
  int views_;
};

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

#endif  // TSPIPE_ALGORITHMS_IMAGE_RECIPE_H_
