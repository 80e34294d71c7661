// Vision networks by name, at any image size, channel count and class
// count, as block sequences that any balance cuts, with every tensor under
// the name PyTorch gives it:
//   resnet18, resnet34, resnet50, resnet101, resnet152: torchvision's
//     ResNets (v1.5: the stride on the bottleneck's 3x3 convolution), names
//     as torchvision's state_dict() ("layer3.5.conv2.weight",
//     "bn1.running_var", "fc.bias"); blocks: the stem, each residual block,
//     the head (pool, flatten, fc);
//   vit_tiny_patch16, vit_small_patch16, vit_base_patch16,
//     vit_large_patch16: timm's VisionTransformer (class token, learned
//     position embeddings, pre-norm blocks, LayerNorm eps 1e-6, token
//     pooling), names as timm's ("blocks.0.attn.qkv.weight", "cls_token",
//     "pos_embed", "head.weight"); blocks: the patch embedding (with the
//     class token and positions), each transformer block, the head (final
//     norm, class token, linear).
// So a safetensors file written in Python from model.state_dict() loads
// strictly (engine/model_files.h), and an exported student loads back into
// PyTorch with load_state_dict(strict=True).
#ifndef TSPIPE_MODELS_VISION_MODELS_H_
#define TSPIPE_MODELS_VISION_MODELS_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "core/partition.h"
#include "data/image_shape.h"
#include "io/safetensors.h"

namespace tspipe {

struct VisionModelOptions {
  std::string name;  // One of VisionModelNames().
  ImageShape shape;
  // ResNets: a 3x3 stride-1 stem without max-pool (the CIFAR-style stem, for
  // small images) instead of torchvision's 7x7 stride-2 stem and max-pool.
  // Its tensors keep torchvision's names; conv1 is then [64, C, 3, 3].
  bool small_stem = false;
  // false: no classifier, as timm's num_classes=0: the last block ends in
  // the representation (ResNet: pooled features; ViT: the final norm's
  // class token), and no fc / head tensors exist. For encoders
  // (self-supervised methods); shape.num_classes is then unused.
  bool classifier = true;
  // ViTs: each transformer block as two blocks (attention, then MLP, each
  // with its residual), so a balance can cut finer: ViT-S then has 26
  // blocks, enough for 16 stages. Tensor names are unchanged.
  bool half_blocks = false;
};

// A network as the engine needs it.
struct VisionModel {
  // Owns every parameter and buffer, under PyTorch's names: what
  // checkpoints, --export and weight files see.
  std::shared_ptr<torch::nn::Module> module;
  // The block modules in order (each a torch::nn::Cloneable), sharing the
  // module's tensors, and the same as one-tensor blocks. Wrap `layers` with
  // MultiViewBlocksFromSequential for several views.
  torch::nn::Sequential layers;
  BlockList blocks;
  // Width of the representation (the head's input).
  int features = 0;
  // "resnet50 (3x224x224, 1000 classes)": the shape in messages.
  std::string description;
};

// The names MakeVisionModel takes, in family order.
std::vector<std::string> VisionModelNames();
bool IsVisionModelName(const std::string& name);

// Builds `options.name`, initialised as torchvision or timm initialise it
// (from the global generator). Throws std::invalid_argument naming the
// problem for an unknown name (listing the known ones), an image size the
// stem or patch size does not fit (naming both), or a shape that is not
// positive.
VisionModel MakeVisionModel(const VisionModelOptions& options);

// The blocks MakeVisionModel(options) gives, and the width of its
// representation (the classifier's input), without building it.
int VisionModelBlocks(const VisionModelOptions& options);
int VisionModelFeatures(const VisionModelOptions& options);

// Checks `options` without building anything (MakeVisionModel's errors),
// for option validation before models are built.
void CheckVisionModelOptions(const VisionModelOptions& options);

// Adapts a weight file's tensors to `model` before a strict load, as timm's
// checkpoint filter does: a ViT's pos_embed made for another grid is
// resampled to this one (bicubic over the patch grid, the class token's
// entry kept). Other tensors pass unchanged; the strict load then names
// whatever still does not fit.
void AdaptVisionTensors(const VisionModelOptions& options, NamedTensors& tensors);

// timm's resample_abs_pos_embed for one class token: pos [1, 1 + g*g, D]
// onto a `grid` x `grid` patch grid (bicubic, antialiased when shrinking).
torch::Tensor ResamplePositionEmbedding(const torch::Tensor& pos, int grid);

// The families' builders (models/resnet_family.cc, models/vit_family.cc).
VisionModel MakeTorchvisionResNet(const VisionModelOptions& options);
VisionModel MakeTimmVit(const VisionModelOptions& options);

}  // namespace tspipe

#endif  // TSPIPE_MODELS_VISION_MODELS_H_
