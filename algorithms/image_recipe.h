// What the image recipes (supervised, kd, byol, mocov3, blockwise,
// codistill) share: their data (data/image_data.h: Fashion-MNIST or
// synthetic images at the network's shape, optionally as augmented views),
// the image shape options (image_size, channels, num_classes), their
// profiling input, top-1 and linear-probe evaluation on the test split, the
// options of a ResNet's shape, and networks by name (models/vision_models.h)
// or the built-in small ResNet. A recipe on other data derives from Recipe
// instead.
#ifndef TSPIPE_ALGORITHMS_IMAGE_RECIPE_H_
#define TSPIPE_ALGORITHMS_IMAGE_RECIPE_H_

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/image_data.h"
#include "engine/recipe.h"
#include "models/resnet.h"
#include "models/vision_models.h"

namespace tspipe {

// The user's own images as a data set name (DataRequest::data).
extern const char kImageFolder[];

// A recipe on images: data, profiling input and evaluation (top-1 of the
// whole student; override Evaluate for others).
class ImageRecipe : public Recipe {
 public:
  // `views`: 0 trains on the images; n > 0 on n augmented views of each
  // (self-supervised methods), as ImageDataOptions::views.
  explicit ImageRecipe(int views = 0) : views_(views) {}

  // Fashion-MNIST, or the user's own ImageFolder tree (--data=imagefolder
  // --data_dir=ROOT; data/image_folder_source.h).
  std::vector<std::string> DataSets() const override { return {kFashionMnist, kImageFolder}; }
  std::unique_ptr<BatchSource> MakeData(const DataRequest& request) const override;
  Activation ExampleInput(int64_t samples) const override;
  Metrics Evaluate(const EvalContext& context) const override;

  const ImageShape& image_shape() const { return shape_; }

 protected:
  // image_size, channels and num_classes (defaults: Fashion-MNIST's 28, 1,
  // 10), for a recipe's Options(); ConfigureImageShape reads them.
  static std::vector<OptionSpec> ImageShapeOptions();
  void ConfigureImageShape(const OptionValues& values);

 private:
  int views_;
  ImageShape shape_;
};

// An image recipe's network: one of VisionModelNames() (torchvision's
// ResNets, timm's ViTs, under PyTorch's tensor names), or kSmallResNet, the
// built-in ResNet for small images whose shape the widths and blocks
// options give.
extern const char kSmallResNet[];
struct ImageNetworkChoice {
  std::string name = kSmallResNet;
  ResNetOptions small;  // kSmallResNet's widths and blocks.
  bool small_stem = false;  // Named ResNets: the 3x3 stride-1 stem.
  bool half_blocks = false;  // Named ViTs: attention and MLP as two blocks.
};
// The option `option` ("student", "teacher") naming the network, with
// "<prefix>widths" and "<prefix>blocks" for kSmallResNet.
std::vector<OptionSpec> ImageNetworkOptions(const std::string& option, const std::string& prefix,
                                            const std::string& what,
                                            const std::vector<int>& widths,
                                            const std::vector<int>& blocks);
// "small_stem": the 3x3 stride-1 stem for every named ResNet of the recipe;
// "half_blocks": every named ViT's transformer blocks as two blocks each.
OptionSpec SmallStemOption();
OptionSpec HalfBlocksOption();
// Throws std::invalid_argument naming `owner`'s `option` unless `network`
// is a known network whose options fit (unknown names list `builtin`, the
// recipe's own network, and the named ones).
void CheckImageNetwork(const std::string& owner, const std::string& option,
                       const std::string& builtin, const VisionModelOptions& network);
// The VisionModelOptions of a named choice.
VisionModelOptions VisionOptionsOf(const ImageNetworkChoice& choice, const ImageShape& shape);
// Reads them; throws std::invalid_argument (a one-line message naming the
// option) for an unknown name or a shape the network does not fit.
ImageNetworkChoice ImageNetworkFrom(const OptionValues& values, const std::string& option,
                                    const std::string& prefix, const std::string& owner,
                                    const ImageShape& shape);

// A built network: what a ModelSet takes for a student or a teacher.
struct ImageNetwork {
  std::shared_ptr<torch::nn::Module> module;
  BlockList blocks;
  std::string shape;  // In words, for checkpoint messages.
  // For ModelSet::adapt_*_file (named ViTs: position embeddings).
  std::function<void(NamedTensors&)> adapt_file;
};
ImageNetwork BuildImageNetwork(const ImageNetworkChoice& choice, const ImageShape& shape);

// Top-1 accuracy of the whole student on the test split (the first
// `test_limit` images if > 0): Fashion-MNIST's, or with --data=imagefolder
// the --eval_dir tree through the evaluation pipeline (the linear probe's
// train split: the training tree, so pipelined).
// The images are brought to `shape` (ToImageShape) on the way.
double TestTop1(const EvalContext& context, const ImageShape& shape);
// The logits of student `model` on the test split (so limited), on the
// CPU, and the labels they predict.
torch::Tensor TestLogits(const EvalContext& context, const ImageShape& shape, int model);
torch::Tensor TestLabels(const EvalContext& context, const ImageShape& shape);

// Top-1 test accuracy of a linear classifier fitted on the frozen features
// of the student's first `encoder_blocks` blocks (eval mode, no
// augmentation): train split -> test split, each limited as requested.
double LinearProbeTop1(const EvalContext& context, const ImageShape& shape, int encoder_blocks);

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
