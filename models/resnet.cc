#include "models/resnet.h"

#include <stdexcept>

namespace tspipe {
namespace {

namespace nn = torch::nn;

// He et al.'s basic block: two 3x3 convolutions with a residual connection;
// a 1x1 projection when the shape changes.
class BasicBlockImpl : public nn::Module {
 public:
  BasicBlockImpl(int in, int out, int stride)
      : conv1_(nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false)),
        bn1_(out),
        conv2_(nn::Conv2dOptions(out, out, 3).padding(1).bias(false)),
        bn2_(out) {
    register_module("conv1", conv1_);
    register_module("bn1", bn1_);
    register_module("conv2", conv2_);
    register_module("bn2", bn2_);
    if (stride != 1 || in != out) {
      shortcut_ = nn::Sequential(nn::Conv2d(nn::Conv2dOptions(in, out, 1).stride(stride).bias(false)),
                                 nn::BatchNorm2d(out));
      register_module("shortcut", shortcut_);
    }
  }

  torch::Tensor forward(torch::Tensor x) {
    torch::Tensor y = torch::relu(bn1_(conv1_(x)));
    y = bn2_(conv2_(y));
    return torch::relu(y + (shortcut_.is_empty() ? x : shortcut_->forward(x)));
  }

 private:
  nn::Conv2d conv1_;
  nn::BatchNorm2d bn1_;
  nn::Conv2d conv2_;
  nn::BatchNorm2d bn2_;
  nn::Sequential shortcut_{nullptr};
};
TORCH_MODULE(BasicBlock);

// conv3x3-BN-ReLU at full resolution.
class StemImpl : public nn::Module {
 public:
  StemImpl(int in, int out)
      : conv_(nn::Conv2dOptions(in, out, 3).padding(1).bias(false)), bn_(out) {
    register_module("conv", conv_);
    register_module("bn", bn_);
  }
  torch::Tensor forward(torch::Tensor x) { return torch::relu(bn_(conv_(x))); }

 private:
  nn::Conv2d conv_;
  nn::BatchNorm2d bn_;
};
TORCH_MODULE(Stem);

// Global average pool and a linear classifier.
class HeadImpl : public nn::Module {
 public:
  HeadImpl(int in, int classes) : fc_(in, classes) { register_module("fc", fc_); }
  torch::Tensor forward(torch::Tensor x) { return fc_(x.mean({2, 3})); }

 private:
  nn::Linear fc_;
};
TORCH_MODULE(Head);

}  // namespace

torch::nn::Sequential MakeResNet(const ResNetOptions& o) {
  if (o.widths.empty() || o.widths.size() != o.blocks_per_group.size()) {
    throw std::invalid_argument("ResNet needs one block count per width");
  }
  nn::Sequential model;
  model->push_back(Stem(o.in_channels, o.widths[0]));
  int in = o.widths[0];
  for (size_t g = 0; g < o.widths.size(); ++g) {
    for (int b = 0; b < o.blocks_per_group[g]; ++b) {
      int stride = (g > 0 && b == 0) ? 2 : 1;
      model->push_back(BasicBlock(in, o.widths[g], stride));
      in = o.widths[g];
    }
  }
  model->push_back(Head(in, o.num_classes));
  return model;
}

}  // namespace tspipe
