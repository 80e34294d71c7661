// torchvision's ResNets (torchvision/models/resnet.py) as blocks. Each block
// module registers its children under torchvision's local names (conv1, bn1,
// downsample.0, ...), and the owning module registers the same children
// under torchvision's paths (layer2.0, fc), so one set of tensors has both
// views: blocks for the pipeline, state_dict names for files.
#include <stdexcept>
#include <string>
#include <vector>

#include "models/vision_models.h"

namespace tspipe {
namespace {

namespace nn = torch::nn;

nn::Conv2d Conv(int in, int out, int kernel, int stride, int padding) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding).bias(false));
}

// torchvision's initialisation: Kaiming normal (fan_out, ReLU) for every
// convolution, batch norm 1 and 0. Linear layers keep PyTorch's default
// (LibTorch's is the same).
void InitLikeTorchvision(nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& m : module.modules(/*include_self=*/true)) {
    if (auto* conv = m->as<nn::Conv2d>()) {
      nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
    } else if (auto* bn = m->as<nn::BatchNorm2d>()) {
      nn::init::ones_(bn->weight);
      nn::init::zeros_(bn->bias);
    }
  }
}

// The 1x1 projection on the shortcut when the shape changes.
nn::Sequential Downsample(int in, int out, int stride) {
  return nn::Sequential(Conv(in, out, 1, stride, 0), nn::BatchNorm2d(out));
}

// BasicBlock (expansion 1) and Bottleneck (expansion 4; the stride on the
// 3x3 convolution, ResNet v1.5) in one module: `bottleneck` picks.
class ResidualImpl : public nn::Cloneable<ResidualImpl> {
 public:
  ResidualImpl(int in, int planes, int stride, bool bottleneck)
      : in_(in), planes_(planes), stride_(stride), bottleneck_(bottleneck) {
    reset();
  }
  int out() const { return planes_ * (bottleneck_ ? 4 : 1); }

  void reset() override {
    if (bottleneck_) {
      conv1_ = register_module("conv1", Conv(in_, planes_, 1, 1, 0));
      bn1_ = register_module("bn1", nn::BatchNorm2d(planes_));
      conv2_ = register_module("conv2", Conv(planes_, planes_, 3, stride_, 1));
      bn2_ = register_module("bn2", nn::BatchNorm2d(planes_));
      conv3_ = register_module("conv3", Conv(planes_, out(), 1, 1, 0));
      bn3_ = register_module("bn3", nn::BatchNorm2d(out()));
    } else {
      conv1_ = register_module("conv1", Conv(in_, planes_, 3, stride_, 1));
      bn1_ = register_module("bn1", nn::BatchNorm2d(planes_));
      conv2_ = register_module("conv2", Conv(planes_, planes_, 3, 1, 1));
      bn2_ = register_module("bn2", nn::BatchNorm2d(planes_));
    }
    if (stride_ != 1 || in_ != out()) {
      downsample_ = register_module("downsample", Downsample(in_, out(), stride_));
    }
  }

  torch::Tensor forward(torch::Tensor x) {
    torch::Tensor y = torch::relu(bn1_(conv1_(x)));
    y = bn2_(conv2_(y));
    if (bottleneck_) y = bn3_(conv3_(torch::relu(y)));
    return torch::relu(y + (downsample_.is_empty() ? x : downsample_->forward(x)));
  }

 private:
  int in_, planes_, stride_;
  bool bottleneck_;
  nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr};
  nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr}, bn3_{nullptr};
  nn::Sequential downsample_{nullptr};
};
TORCH_MODULE(Residual);

// conv1-bn1-ReLU, then the 3x3 stride-2 max-pool (torchvision's stem), or
// a 3x3 stride-1 convolution without pool (the small stem).
class ResNetStemImpl : public nn::Cloneable<ResNetStemImpl> {
 public:
  ResNetStemImpl(int channels, bool small) : channels_(channels), small_(small) { reset(); }
  void reset() override {
    conv1 = register_module("conv1", small_ ? Conv(channels_, 64, 3, 1, 1)
                                            : Conv(channels_, 64, 7, 2, 3));
    bn1 = register_module("bn1", nn::BatchNorm2d(64));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::relu(bn1(conv1(x)));
    return small_ ? x : torch::max_pool2d(x, 3, 2, 1);
  }

  nn::Conv2d conv1{nullptr};
  nn::BatchNorm2d bn1{nullptr};

 private:
  int channels_;
  bool small_;
};
TORCH_MODULE(ResNetStem);

// Adaptive average pool to 1x1, flatten, fc (none when `classes` is 0: the
// pooled features).
class ResNetHeadImpl : public nn::Cloneable<ResNetHeadImpl> {
 public:
  ResNetHeadImpl(int features, int classes) : features_(features), classes_(classes) { reset(); }
  void reset() override {
    if (classes_ > 0) fc = register_module("fc", nn::Linear(features_, classes_));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = x.mean({2, 3});
    return fc.is_empty() ? x : fc(x);
  }

  nn::Linear fc{nullptr};

 private:
  int features_, classes_;
};
TORCH_MODULE(ResNetHead);

struct ResNetArch {
  const char* name;
  bool bottleneck;
  std::vector<int> layers;
};

const std::vector<ResNetArch>& Architectures() {
  static const std::vector<ResNetArch> archs = {
      {"resnet18", false, {2, 2, 2, 2}},   {"resnet34", false, {3, 4, 6, 3}},
      {"resnet50", true, {3, 4, 6, 3}},    {"resnet101", true, {3, 4, 23, 3}},
      {"resnet152", true, {3, 8, 36, 3}},
  };
  return archs;
}

}  // namespace

VisionModel MakeTorchvisionResNet(const VisionModelOptions& o) {
  const ResNetArch* arch = nullptr;
  for (const ResNetArch& a : Architectures()) {
    if (o.name == a.name) arch = &a;
  }
  if (!arch) throw std::invalid_argument("not a ResNet: " + o.name);

  VisionModel model;
  model.module = std::make_shared<nn::Module>("ResNet");
  ResNetStem stem(o.shape.channels, o.small_stem);
  model.module->register_module("conv1", stem->conv1);
  model.module->register_module("bn1", stem->bn1);
  nn::Sequential blocks;
  blocks->push_back(stem);
  int in = 64;
  for (size_t g = 0; g < arch->layers.size(); ++g) {
    const int planes = 64 << g;
    nn::Sequential layer;
    for (int b = 0; b < arch->layers[g]; ++b) {
      Residual block(in, planes, (g > 0 && b == 0) ? 2 : 1, arch->bottleneck);
      in = block->out();
      layer->push_back(block);
      blocks->push_back(block);
    }
    model.module->register_module("layer" + std::to_string(g + 1), layer);
  }
  ResNetHead head(in, o.classifier ? o.shape.num_classes : 0);
  if (o.classifier) model.module->register_module("fc", head->fc);
  blocks->push_back(head);
  InitLikeTorchvision(*model.module);

  model.layers = blocks;
  model.blocks = BlocksFromSequential(blocks);
  model.features = in;
  return model;
}

}  // namespace tspipe
