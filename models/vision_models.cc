#include "models/vision_models.h"

#include <algorithm>
#include <stdexcept>

namespace tspipe {
namespace {

constexpr int kVitPatch = 16;

bool IsResNet(const std::string& name) { return name.rfind("resnet", 0) == 0; }

std::string Join(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

std::string Describe(const VisionModelOptions& o) {
  const std::string stem = o.small_stem ? "small stem, " : "";
  if (!o.classifier) {
    return o.name + " encoder (" + stem + std::to_string(o.shape.channels) + "x" +
           std::to_string(o.shape.image_size) + "x" + std::to_string(o.shape.image_size) + ")";
  }
  return o.name + " (" + stem + DescribeImageShape(o.shape) + ")";
}

struct Size {
  const char* name;
  int blocks, features;
};

// Stem + residual blocks + head; embedding + transformer blocks + head.
const Size* SizeOf(const std::string& name) {
  static const Size sizes[] = {
      {"resnet18", 1 + 8 + 1, 512},          {"resnet34", 1 + 16 + 1, 512},
      {"resnet50", 1 + 16 + 1, 2048},        {"resnet101", 1 + 33 + 1, 2048},
      {"resnet152", 1 + 50 + 1, 2048},       {"vit_tiny_patch16", 1 + 12 + 1, 192},
      {"vit_small_patch16", 1 + 12 + 1, 384}, {"vit_base_patch16", 1 + 12 + 1, 768},
      {"vit_large_patch16", 1 + 24 + 1, 1024},
  };
  for (const Size& s : sizes) {
    if (name == s.name) return &s;
  }
  return nullptr;
}

}  // namespace

int VisionModelBlocks(const VisionModelOptions& options) {
  CheckVisionModelOptions(options);
  const int blocks = SizeOf(options.name)->blocks;
  return options.half_blocks ? 2 * blocks - 2 : blocks;  // Embedding and head stay whole.
}

int VisionModelFeatures(const VisionModelOptions& options) {
  CheckVisionModelOptions(options);
  return SizeOf(options.name)->features;
}

std::vector<std::string> VisionModelNames() {
  return {"resnet18",         "resnet34",          "resnet50",         "resnet101",
          "resnet152",        "vit_tiny_patch16",  "vit_small_patch16", "vit_base_patch16",
          "vit_large_patch16"};
}

bool IsVisionModelName(const std::string& name) {
  const std::vector<std::string> names = VisionModelNames();
  return std::find(names.begin(), names.end(), name) != names.end();
}

void CheckVisionModelOptions(const VisionModelOptions& o) {
  if (!IsVisionModelName(o.name)) {
    throw std::invalid_argument("unknown model '" + o.name + "' (known: " +
                                Join(VisionModelNames()) + ")");
  }
  const ImageShape& s = o.shape;
  if (s.image_size < 1 || s.channels < 1 || (o.classifier && s.num_classes < 1)) {
    throw std::invalid_argument(o.name + " needs a positive image_size, channels and num_classes (got " +
                                std::to_string(s.image_size) + ", " + std::to_string(s.channels) +
                                ", " + std::to_string(s.num_classes) + ")");
  }
  if (IsResNet(o.name) && o.half_blocks) {
    throw std::invalid_argument("half_blocks is for ViTs; " + o.name + "'s blocks are residual blocks");
  }
  if (IsResNet(o.name)) {
    // The stem and the three strided stages shrink the image 32x (8x with
    // the small stem); below that the last stages see 1x1 maps padded with
    // zeros, which is not the network any more.
    const int reduction = o.small_stem ? 8 : 32;
    if (s.image_size < reduction) {
      throw std::invalid_argument(
          "image_size " + std::to_string(s.image_size) + " is too small for " + o.name + "'s " +
          (o.small_stem ? "small stem and stages, which shrink it 8x (needs at least 8)"
                        : "7x7 stride-2 stem, max-pool and stages, which shrink it 32x (needs at "
                          "least 32; small_stem needs 8)"));
    }
  } else {
    if (o.small_stem) {
      throw std::invalid_argument("small_stem is for ResNets; " + o.name + " has a patch embedding");
    }
    if (s.image_size < kVitPatch || s.image_size % kVitPatch != 0) {
      throw std::invalid_argument("image_size " + std::to_string(s.image_size) + " does not fit " +
                                  o.name + "'s patch size " + std::to_string(kVitPatch) +
                                  " (needs a multiple of it)");
    }
  }
}

VisionModel MakeVisionModel(const VisionModelOptions& o) {
  CheckVisionModelOptions(o);
  VisionModel model = IsResNet(o.name) ? MakeTorchvisionResNet(o) : MakeTimmVit(o);
  model.description = Describe(o);
  return model;
}

void AdaptVisionTensors(const VisionModelOptions& o, NamedTensors& tensors) {
  if (IsResNet(o.name)) return;
  auto it = tensors.find("pos_embed");
  if (it == tensors.end()) return;
  const int grid = o.shape.image_size / kVitPatch;
  const torch::Tensor& pos = it->second;
  if (pos.dim() == 3 && pos.size(1) != 1 + grid * grid) {
    it->second = ResamplePositionEmbedding(pos, grid);
  }
}

}  // namespace tspipe
