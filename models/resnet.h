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

}  // namespace tspipe

#endif  // TSPIPE_MODELS_RESNET_H_
