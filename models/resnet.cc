#include "models/resnet.h"

#include <stdexcept>

namespace tspipe {
namespace {

namespace nn = torch::nn;

// He et al.'s basic block: two 3x3 convolutions with a residual connection;
// a 1x1 projection when the shape changes.
class BasicBlockImpl : public nn::Cloneable<BasicBlockImpl> {
 public:
  BasicBlockImpl(int in, int out, int stride) : in_(in), out_(out), stride_(stride) { reset(); }

  // Builds the submodules; Cloneable calls it again to deep-copy a block
  // (data-parallel replicas).
  void reset() override {
    conv1_ = register_module(
        "conv1", nn::Conv2d(nn::Conv2dOptions(in_, out_, 3).stride(stride_).padding(1).bias(false)));
    bn1_ = register_module("bn1", nn::BatchNorm2d(out_));
    conv2_ = register_module(
        "conv2", nn::Conv2d(nn::Conv2dOptions(out_, out_, 3).padding(1).bias(false)));
    bn2_ = register_module("bn2", nn::BatchNorm2d(out_));
    if (stride_ != 1 || in_ != out_) {
      shortcut_ = register_module(
          "shortcut",
          nn::Sequential(nn::Conv2d(nn::Conv2dOptions(in_, out_, 1).stride(stride_).bias(false)),
                         nn::BatchNorm2d(out_)));
    }
  }

  torch::Tensor forward(torch::Tensor x) {
    torch::Tensor y = torch::relu(bn1_(conv1_(x)));
    y = bn2_(conv2_(y));
    return torch::relu(y + (shortcut_.is_empty() ? x : shortcut_->forward(x)));
  }

 private:
  int in_, out_, stride_;
  nn::Conv2d conv1_{nullptr};
  nn::BatchNorm2d bn1_{nullptr};
  nn::Conv2d conv2_{nullptr};
  nn::BatchNorm2d bn2_{nullptr};
  nn::Sequential shortcut_{nullptr};
};
TORCH_MODULE(BasicBlock);

// conv3x3-BN-ReLU: the stem (stride 1), and a blockwise student's
// stand-in for a basic block.
class StemImpl : public nn::Cloneable<StemImpl> {
 public:
  StemImpl(int in, int out, int stride = 1) : in_(in), out_(out), stride_(stride) { reset(); }
  void reset() override {
    conv_ = register_module(
        "conv", nn::Conv2d(nn::Conv2dOptions(in_, out_, 3).stride(stride_).padding(1).bias(false)));
    bn_ = register_module("bn", nn::BatchNorm2d(out_));
  }
  torch::Tensor forward(torch::Tensor x) { return torch::relu(bn_(conv_(x))); }

 private:
  int in_, out_, stride_;
  nn::Conv2d conv_{nullptr};
  nn::BatchNorm2d bn_{nullptr};
};
TORCH_MODULE(Stem);

// Global average pool and a linear classifier.
class HeadImpl : public nn::Cloneable<HeadImpl> {
 public:
  HeadImpl(int in, int classes) : in_(in), classes_(classes) { reset(); }
  void reset() override { fc_ = register_module("fc", nn::Linear(in_, classes_)); }
  torch::Tensor forward(torch::Tensor x) { return fc_(x.mean({2, 3})); }

 private:
  int in_, classes_;
  nn::Linear fc_{nullptr};
};
TORCH_MODULE(Head);

// Global average pool: the encoder's representation.
class GlobalPoolImpl : public nn::Cloneable<GlobalPoolImpl> {
 public:
  void reset() override {}
  torch::Tensor forward(torch::Tensor x) { return x.mean({2, 3}); }
};
TORCH_MODULE(GlobalPool);


// Stem and basic blocks of a ResNet; returns the output width.
int AddResNetBody(const ResNetOptions& o, nn::Sequential& model) {
  if (o.widths.empty() || o.widths.size() != o.blocks_per_group.size()) {
    throw std::invalid_argument("ResNet needs one block count per width");
  }
  model->push_back(Stem(o.in_channels, o.widths[0]));
  int in = o.widths[0];
  for (size_t g = 0; g < o.widths.size(); ++g) {
    for (int b = 0; b < o.blocks_per_group[g]; ++b) {
      int stride = (g > 0 && b == 0) ? 2 : 1;
      model->push_back(BasicBlock(in, o.widths[g], stride));
      in = o.widths[g];
    }
  }
  return in;
}

}  // namespace

void ByolMlpImpl::reset() {
  fc1_ = register_module("fc1", nn::Linear(in_, hidden_));
  bn_ = register_module("bn", nn::BatchNorm1d(hidden_));
  fc2_ = register_module("fc2", nn::Linear(hidden_, out_));
}

torch::Tensor ByolMlpImpl::forward(torch::Tensor x) { return fc2_(torch::relu(bn_(fc1_(x)))); }

torch::nn::Sequential MakeByolOnline(const ByolNetOptions& o) {
  nn::Sequential model;
  const int features = AddResNetBody(o.encoder, model);
  model->push_back(GlobalPool());
  model->push_back(ByolMlp(features, o.hidden, o.projection));
  model->push_back(ByolMlp(o.projection, o.hidden, o.projection));
  return model;
}

int ByolEncoderBlocks(const ByolNetOptions& o) {
  int blocks = 2;  // Stem and pool.
  for (int b : o.encoder.blocks_per_group) blocks += b;
  return blocks;
}

torch::nn::Sequential MakeBlockwiseStudent(const ResNetOptions& o) {
  nn::Sequential student;
  student->push_back(Stem(o.in_channels, o.widths.at(0)));
  int in = o.widths[0];
  for (size_t g = 0; g < o.widths.size(); ++g) {
    for (int b = 0; b < o.blocks_per_group.at(g); ++b) {
      const int stride = (g > 0 && b == 0) ? 2 : 1;
      student->push_back(Stem(in, o.widths[g], stride));
      in = o.widths[g];
    }
  }
  student->push_back(Head(in, o.num_classes));
  return student;
}

torch::nn::Sequential MakeResNet(const ResNetOptions& o) {
  nn::Sequential model;
  const int features = AddResNetBody(o, model);
  model->push_back(Head(features, o.num_classes));
  return model;
}

}  // namespace tspipe
