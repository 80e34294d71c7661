#include "algorithms/image_recipe.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <stdexcept>
#include <utility>

#include "data/image_folder_source.h"

namespace tspipe {
namespace {

// The student's first `blocks` blocks (-1 = all) on `images` at `shape`, 500
// at a time (fewer for large images), concatenated on the CPU.
torch::Tensor ForwardInChunks(const EvalContext& context, const ImageShape& shape,
                              const torch::Tensor& images, int64_t n, int blocks, int model = 0) {
  const int64_t chunk =
      std::max<int64_t>(8, 500 * 28 * 28 / (static_cast<int64_t>(shape.image_size) * shape.image_size));
  std::vector<torch::Tensor> out;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    Activation x{ToImageShape(images.slice(0, begin, std::min(n, begin + chunk)), shape)};
    out.push_back(context.ForwardStudent(x, blocks, model)[0].to(torch::kCPU));
  }
  return torch::cat(out);
}

int64_t Limited(int64_t n, int limit) { return limit > 0 ? std::min<int64_t>(n, limit) : n; }

// The split evaluation reads: Fashion-MNIST's, or with --data=imagefolder
// the training folder (train) or --eval_dir (test) through the evaluation
// pipeline, decoded once per process and shape (several evaluations of one
// run share it) and only as far as `limit` asks (spread over the classes).
// Held in memory as float: size the limits for large folders (ImageNet's
// 50,000 validation images at 224 would be 30 GB).
std::shared_ptr<const LabeledImages> EvalSet(const EvalContext& context, const ImageShape& shape,
                                             bool train, int limit) {
  const EvalRequest& r = context.request();
  if (r.data != kImageFolder) return FashionMnistImages(r.data_dir, train);
  const std::string root = train ? r.data_dir : r.eval_dir;
  if (root.empty()) {
    throw std::invalid_argument("--data=imagefolder evaluates on --eval_dir=ROOT (the held-out "
                                "ImageFolder tree)");
  }
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<const LabeledImages>> cache;
  const std::string key = root + "|" + DescribeImageShape(shape) + "|" + std::to_string(limit) +
                          (r.plain_resize ? "|resize" : "|crop");
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  ImageFolderOptions o;
  o.root = root;
  o.shape = shape;
  o.limit = limit;
  o.threads = std::max(1, r.data_threads);
  o.skip_bad_images = r.skip_bad_images;
  o.plain_resize = r.plain_resize;
  // The held-out folder's labels must mean the training folder's classes.
  if (!train && !r.data_dir.empty()) o.classes = ImageFolderClasses(r.data_dir);
  EvalImages loaded = LoadImageFolderForEval(o);
  auto set = std::make_shared<LabeledImages>();
  set->images = loaded.images;
  set->labels = loaded.labels;
  cache[key] = set;
  return set;
}

}  // namespace

const char kSmallResNet[] = "small_resnet";
const char kImageFolder[] = "imagefolder";

std::unique_ptr<BatchSource> ImageRecipe::MakeData(const DataRequest& request) const {
  if (request.data == kImageFolder) {
    if (request.data_dir.empty()) {
      throw std::invalid_argument("--data=imagefolder needs --data_dir=ROOT (ROOT/<class>/<image>, "
                                  "as torchvision's ImageFolder)");
    }
    ImageFolderOptions o;
    o.root = request.data_dir;
    o.shape = shape_;
    o.batch_size = request.batch_size;
    o.seed = static_cast<uint64_t>(request.seed);
    o.views = views_;
    o.limit = request.train_samples;
    o.threads = request.data_threads;
    o.skip_bad_images = request.skip_bad_images;
    o.plain_resize = request.plain_resize;
    return std::make_unique<ImageFolderSource>(o);
  }
  ImageDataOptions options;
  options.views = views_;
  options.shape = shape_;
  return MakeImageData(request, options);
}

Activation ImageRecipe::ExampleInput(int64_t samples) const {
  return ImageExample(samples, views_, shape_);
}

Metrics ImageRecipe::Evaluate(const EvalContext& context) const {
  return {{"top1", TestTop1(context, shape_)}};
}

std::vector<OptionSpec> ImageRecipe::ImageShapeOptions() {
  const ImageShape d;
  return {IntOption("image_size", d.image_size,
                    "image height and width in pixels (Fashion-MNIST is resized to it)")
              .AtLeast(1),
          IntOption("channels", d.channels,
                    "image channels (Fashion-MNIST's grey channel is repeated)")
              .AtLeast(1),
          IntOption("num_classes", d.num_classes, "classes the network predicts").AtLeast(1)};
}

void ImageRecipe::ConfigureImageShape(const OptionValues& values) {
  shape_.image_size = values.GetInt("image_size");
  shape_.channels = values.GetInt("channels");
  shape_.num_classes = values.GetInt("num_classes");
}

std::vector<OptionSpec> ImageNetworkOptions(const std::string& option, const std::string& prefix,
                                            const std::string& what,
                                            const std::vector<int>& widths,
                                            const std::vector<int>& blocks) {
  std::string names;
  for (const std::string& n : VisionModelNames()) names += ", " + n;
  std::vector<OptionSpec> o = {StringOption(option, kSmallResNet,
                                            "the " + what + " network: " + kSmallResNet +
                                                " (the built-in ResNet for small images, "
                                                "shaped by " + prefix + "widths and " + prefix +
                                                "blocks)" + names)};
  for (OptionSpec& s : ResNetShapeOptions(prefix, what + " " + kSmallResNet, widths, blocks)) {
    o.push_back(s);
  }
  return o;
}

OptionSpec SmallStemOption() {
  return BoolOption("small_stem", false,
                    "named ResNets take a 3x3 stride-1 stem without max-pool (for small images) "
                    "instead of torchvision's 7x7 stride-2 stem");
}

OptionSpec HalfBlocksOption() {
  return BoolOption("half_blocks", false,
                    "named ViTs cut finer: each transformer block as two blocks (attention, "
                    "MLP), e.g. for 16 stages of ViT-S");
}

VisionModelOptions VisionOptionsOf(const ImageNetworkChoice& choice, const ImageShape& shape) {
  VisionModelOptions o;
  o.name = choice.name;
  o.shape = shape;
  o.small_stem = choice.small_stem;
  o.half_blocks = choice.half_blocks;
  return o;
}

void CheckImageNetwork(const std::string& owner, const std::string& option,
                       const std::string& builtin, const VisionModelOptions& network) {
  const std::string where = owner + " option " + option + "=" + network.name;
  if (!IsVisionModelName(network.name)) {
    std::string known = builtin;
    for (const std::string& n : VisionModelNames()) known += ", " + n;
    throw std::invalid_argument(where + " is not a known network (known: " + known + ")");
  }
  try {
    CheckVisionModelOptions(network);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(where + ": " + e.what());
  }
}

ImageNetworkChoice ImageNetworkFrom(const OptionValues& values, const std::string& option,
                                    const std::string& prefix, const std::string& owner,
                                    const ImageShape& shape) {
  ImageNetworkChoice c;
  c.name = values.GetString(option);
  c.small = ResNetShapeFrom(values, prefix, owner);
  c.small_stem = values.GetBool("small_stem") && c.name.rfind("resnet", 0) == 0;
  c.half_blocks = values.GetBool("half_blocks") && c.name.rfind("vit_", 0) == 0;
  if (c.name == kSmallResNet) return c;
  CheckImageNetwork(owner, option, kSmallResNet, VisionOptionsOf(c, shape));
  return c;
}

ImageNetwork BuildImageNetwork(const ImageNetworkChoice& choice, const ImageShape& shape) {
  ImageNetwork net;
  if (choice.name == kSmallResNet) {
    ResNetOptions o = choice.small;
    o.in_channels = shape.channels;
    o.num_classes = shape.num_classes;
    torch::nn::Sequential seq = MakeResNet(o);
    net.module = seq.ptr();
    net.blocks = BlocksFromSequential(seq);
    net.shape = DescribeShape(o);
    return net;
  }
  const VisionModelOptions vo = VisionOptionsOf(choice, shape);
  VisionModel model = MakeVisionModel(vo);
  net.module = model.module;
  net.blocks = model.blocks;
  net.shape = model.description;
  net.adapt_file = [vo](NamedTensors& tensors) { AdaptVisionTensors(vo, tensors); };
  return net;
}

std::vector<OptionSpec> ResNetShapeOptions(const std::string& prefix, const std::string& what,
                                           const std::vector<int>& widths,
                                           const std::vector<int>& blocks) {
  return {IntListOption(prefix + "widths", widths,
                        what + " ResNet channels per group (each later group halves the "
                               "resolution)")
              .AtLeast(1),
          IntListOption(prefix + "blocks", blocks, what + " ResNet basic blocks per group")
              .AtLeast(1)};
}

ResNetOptions ResNetShapeFrom(const OptionValues& values, const std::string& prefix,
                              const std::string& owner) {
  ResNetOptions o;
  o.widths = values.GetInts(prefix + "widths");
  o.blocks_per_group = values.GetInts(prefix + "blocks");
  if (o.widths.size() != o.blocks_per_group.size()) {
    throw std::invalid_argument(owner + " options " + prefix + "widths=" +
                                FormatIntList(o.widths) + " and " + prefix + "blocks=" +
                                FormatIntList(o.blocks_per_group) +
                                " need the same number of entries (one block count per group)");
  }
  return o;
}

std::string DescribeShape(const ResNetOptions& shape) {
  return "widths " + FormatIntList(shape.widths) + ", blocks " +
         FormatIntList(shape.blocks_per_group);
}

double TestTop1(const EvalContext& context, const ImageShape& shape) {
  std::shared_ptr<const LabeledImages> test =
      EvalSet(context, shape, false, context.request().test_limit);
  const int64_t n = Limited(test->images.size(0), context.request().test_limit);
  torch::Tensor predicted = ForwardInChunks(context, shape, test->images, n, -1).argmax(1);
  return static_cast<double>(predicted.eq(test->labels.slice(0, 0, n)).sum().item<int64_t>()) /
         static_cast<double>(n);
}

torch::Tensor TestLogits(const EvalContext& context, const ImageShape& shape, int model) {
  std::shared_ptr<const LabeledImages> test =
      EvalSet(context, shape, false, context.request().test_limit);
  const int64_t n = Limited(test->images.size(0), context.request().test_limit);
  return ForwardInChunks(context, shape, test->images, n, -1, model);
}

torch::Tensor TestLabels(const EvalContext& context, const ImageShape& shape) {
  std::shared_ptr<const LabeledImages> test =
      EvalSet(context, shape, false, context.request().test_limit);
  return test->labels.slice(0, 0, Limited(test->images.size(0), context.request().test_limit));
}

double LinearProbeTop1(const EvalContext& context, const ImageShape& shape, int encoder_blocks) {
  auto features = [&](bool train, int limit) {
    std::shared_ptr<const LabeledImages> set = EvalSet(context, shape, train, limit);
    const int64_t n = Limited(set->images.size(0), limit);
    return std::make_pair(ForwardInChunks(context, shape, set->images, n, encoder_blocks),
                          set->labels.slice(0, 0, n));
  };
  auto [train_x, train_y] = features(true, context.request().train_limit);
  auto [test_x, test_y] = features(false, context.request().test_limit);
  // Standardise with the train statistics, then multinomial logistic
  // regression by full-batch Adam (a convex problem; 300 steps converge on
  // these feature sizes).
  torch::Tensor mean = train_x.mean(0, true), std = train_x.std(0, true, true) + 1e-6;
  train_x = (train_x - mean) / std;
  test_x = (test_x - mean) / std;
  torch::nn::Linear classifier(train_x.size(1), shape.num_classes);
  torch::optim::Adam opt(classifier->parameters(), torch::optim::AdamOptions(0.05));
  for (int it = 0; it < 300; ++it) {
    torch::Tensor loss = torch::nn::functional::cross_entropy(classifier(train_x), train_y) +
                         1e-4 * classifier->weight.pow(2).sum();
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  torch::NoGradGuard no_grad;
  torch::Tensor predicted = classifier(test_x).argmax(1);
  return predicted.eq(test_y).to(torch::kFloat64).mean().item<double>();
}

}  // namespace tspipe
