// Small ResNets for 28x28 (or 32x32) images, written as block sequences so
// that any balance partitions them.
#ifndef TSPIPE_MODELS_RESNET_H_
#define TSPIPE_MODELS_RESNET_H_

#include <torch/torch.h>

#include <vector>

namespace tspipe {

struct ResNetOptions {
  int in_channels = 1;
  int num_classes = 10;
  // Channels of each group; the first group keeps the stem's resolution, each
  // later one halves it.
  std::vector<int> widths = {16, 32, 64};
  // Basic blocks per group (ResNet-18 is {2,2,2,2}).
  std::vector<int> blocks_per_group = {1, 1, 1};
};

// stem (conv-BN-ReLU), the basic blocks in order, head (pool, flatten,
// linear): 2 + sum(blocks_per_group) children.
torch::nn::Sequential MakeResNet(const ResNetOptions& options);

// Blockwise distillation's student for the teacher MakeResNet(`teacher`):
// one block per teacher block, with its input and output shapes, so that
// student block i can read the teacher's input of block i and match its
// output. The stem and the head as the teacher's; each basic block (two 3x3
// convolutions and a shortcut) becomes one 3x3 conv-BN-ReLU with the same
// stride, about half its cost.
torch::nn::Sequential MakeBlockwiseStudent(const ResNetOptions& teacher);

// BYOL's projector and predictor: Linear-BN-ReLU-Linear.
class ByolMlpImpl : public torch::nn::Cloneable<ByolMlpImpl> {
 public:
  ByolMlpImpl(int in, int hidden, int out) : in_(in), hidden_(hidden), out_(out) { reset(); }
  void reset() override;
  torch::Tensor forward(torch::Tensor x);

 private:
  int in_, hidden_, out_;
  torch::nn::Linear fc1_{nullptr};
  torch::nn::BatchNorm1d bn_{nullptr};
  torch::nn::Linear fc2_{nullptr};
};
TORCH_MODULE(ByolMlp);

// BYOL's networks over a ResNet encoder (Grill et al. 2020).
struct ByolNetOptions {
  ResNetOptions encoder;  // num_classes is unused.
  int hidden = 256;       // MLP hidden width (4096 in the paper, for ImageNet).
  int projection = 64;    // Projection size (256 in the paper).
};

// The online network as blocks: stem, the basic blocks, global average pool
// (the encoder: ByolEncoderBlocks() children, output = representation),
// projector MLP, predictor MLP. Each MLP is Linear-BN-ReLU-Linear.
torch::nn::Sequential MakeByolOnline(const ByolNetOptions& options);
// Its target (momentum) network: MakeMomentumTarget (algorithms/momentum.h).
// Children of MakeByolOnline that form the encoder.
int ByolEncoderBlocks(const ByolNetOptions& options);

}  // namespace tspipe

#endif  // TSPIPE_MODELS_RESNET_H_
