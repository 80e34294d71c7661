// timm's VisionTransformer (timm/models/vision_transformer.py, default
// arguments: class token, token pooling, no pre-norm, no layer scale, qkv
// bias, GELU, LayerNorm eps 1e-6) as blocks, under timm's tensor names.
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "models/vision_models.h"

namespace tspipe {
namespace {

namespace nn = torch::nn;

constexpr double kNormEps = 1e-6;
constexpr int kPatch = 16;

nn::LayerNorm Norm(int dim) {
  return nn::LayerNorm(nn::LayerNormOptions({dim}).eps(kNormEps));
}

// timm's init_weights_vit_timm: every Linear trunc_normal(std=.02) (timm
// truncates at +-2, absolute, so at std .02 this is a normal draw) and zero
// bias. The patch convolution keeps PyTorch's default.
void InitLinears(nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& m : module.modules(/*include_self=*/true)) {
    if (auto* linear = m->as<nn::Linear>()) {
      nn::init::normal_(linear->weight, 0.0, 0.02).clamp_(-2.0, 2.0);
      nn::init::zeros_(linear->bias);
    }
  }
}

// timm's PatchEmbed: holds proj, a stride-16 convolution.
class PatchProjectionImpl : public nn::Cloneable<PatchProjectionImpl> {
 public:
  PatchProjectionImpl(int channels, int dim) : channels_(channels), dim_(dim) { reset(); }
  void reset() override {
    proj = register_module("proj", nn::Conv2d(nn::Conv2dOptions(channels_, dim_, kPatch).stride(kPatch)));
  }
  torch::Tensor forward(torch::Tensor x) { return proj(x).flatten(2).transpose(1, 2); }

  nn::Conv2d proj{nullptr};

 private:
  int channels_, dim_;
};
TORCH_MODULE(PatchProjection);

// patch_embed (the patches as tokens), then the class token in front and
// the position embeddings added: [N, 1 + P, D].
class PatchEmbeddingImpl : public nn::Cloneable<PatchEmbeddingImpl> {
 public:
  PatchEmbeddingImpl(int channels, int dim, int grid) : channels_(channels), dim_(dim), grid_(grid) {
    reset();
  }
  void reset() override {
    patch_embed = register_module("patch_embed", PatchProjection(channels_, dim_));
    // timm: cls_token normal(std=1e-6), pos_embed trunc_normal(std=.02).
    cls_token = register_parameter("cls_token", torch::randn({1, 1, dim_}) * 1e-6);
    pos_embed = register_parameter("pos_embed", torch::randn({1, 1 + grid_ * grid_, dim_}) * 0.02);
  }
  torch::Tensor forward(torch::Tensor x) {
    torch::Tensor tokens = patch_embed(x);  // [N, P, D]
    return torch::cat({cls_token.expand({x.size(0), 1, dim_}), tokens}, 1) + pos_embed;
  }

  PatchProjection patch_embed{nullptr};
  torch::Tensor cls_token, pos_embed;

 private:
  int channels_, dim_, grid_;
};
TORCH_MODULE(PatchEmbedding);

// timm's Attention: qkv in one Linear, scaled dot-product attention, proj.
class AttentionImpl : public nn::Cloneable<AttentionImpl> {
 public:
  AttentionImpl(int dim, int heads) : dim_(dim), heads_(heads) { reset(); }
  void reset() override {
    qkv = register_module("qkv", nn::Linear(dim_, 3 * dim_));
    proj = register_module("proj", nn::Linear(dim_, dim_));
  }
  torch::Tensor forward(torch::Tensor x) {
    const int64_t n = x.size(0), t = x.size(1), h = heads_, d = dim_ / heads_;
    torch::Tensor q_k_v = qkv(x).reshape({n, t, 3, h, d}).permute({2, 0, 3, 1, 4});
    torch::Tensor y = at::scaled_dot_product_attention(q_k_v[0], q_k_v[1], q_k_v[2]);
    return proj(y.transpose(1, 2).reshape({n, t, dim_}));
  }

  nn::Linear qkv{nullptr}, proj{nullptr};

 private:
  int dim_, heads_;
};
TORCH_MODULE(Attention);

class MlpImpl : public nn::Cloneable<MlpImpl> {
 public:
  MlpImpl(int dim, int hidden) : dim_(dim), hidden_(hidden) { reset(); }
  void reset() override {
    fc1 = register_module("fc1", nn::Linear(dim_, hidden_));
    fc2 = register_module("fc2", nn::Linear(hidden_, dim_));
  }
  torch::Tensor forward(torch::Tensor x) { return fc2(torch::gelu(fc1(x))); }

  nn::Linear fc1{nullptr}, fc2{nullptr};

 private:
  int dim_, hidden_;
};
TORCH_MODULE(Mlp);

// Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x)).
class VitBlockImpl : public nn::Cloneable<VitBlockImpl> {
 public:
  VitBlockImpl(int dim, int heads) : dim_(dim), heads_(heads) { reset(); }
  void reset() override {
    norm1 = register_module("norm1", Norm(dim_));
    attn = register_module("attn", Attention(dim_, heads_));
    norm2 = register_module("norm2", Norm(dim_));
    mlp = register_module("mlp", Mlp(dim_, 4 * dim_));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = x + attn(norm1(x));
    return x + mlp(norm2(x));
  }

  nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  Attention attn{nullptr};
  Mlp mlp{nullptr};

 private:
  int dim_, heads_;
};
TORCH_MODULE(VitBlock);

// Half of a pre-norm block, for finer cuts (VisionModelOptions::half_blocks):
// x + attn(norm1(x)), or x + mlp(norm2(x)).
class AttentionHalfImpl : public nn::Cloneable<AttentionHalfImpl> {
 public:
  AttentionHalfImpl(int dim, int heads) : dim_(dim), heads_(heads) { reset(); }
  void reset() override {
    norm1 = register_module("norm1", Norm(dim_));
    attn = register_module("attn", Attention(dim_, heads_));
  }
  torch::Tensor forward(torch::Tensor x) { return x + attn(norm1(x)); }

  nn::LayerNorm norm1{nullptr};
  Attention attn{nullptr};

 private:
  int dim_, heads_;
};
TORCH_MODULE(AttentionHalf);

class MlpHalfImpl : public nn::Cloneable<MlpHalfImpl> {
 public:
  explicit MlpHalfImpl(int dim) : dim_(dim) { reset(); }
  void reset() override {
    norm2 = register_module("norm2", Norm(dim_));
    mlp = register_module("mlp", Mlp(dim_, 4 * dim_));
  }
  torch::Tensor forward(torch::Tensor x) { return x + mlp(norm2(x)); }

  nn::LayerNorm norm2{nullptr};
  Mlp mlp{nullptr};

 private:
  int dim_;
};
TORCH_MODULE(MlpHalf);

// The final norm, the class token's row, the classifier (none when
// `classes` is 0: the representation).
class VitHeadImpl : public nn::Cloneable<VitHeadImpl> {
 public:
  VitHeadImpl(int dim, int classes) : dim_(dim), classes_(classes) { reset(); }
  void reset() override {
    norm = register_module("norm", Norm(dim_));
    if (classes_ > 0) head = register_module("head", nn::Linear(dim_, classes_));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = norm(x).select(1, 0);
    return head.is_empty() ? x : head(x);
  }

  nn::LayerNorm norm{nullptr};
  nn::Linear head{nullptr};

 private:
  int dim_, classes_;
};
TORCH_MODULE(VitHead);

struct VitArch {
  const char* name;
  int dim, depth, heads;
};

const std::vector<VitArch>& Architectures() {
  static const std::vector<VitArch> archs = {
      {"vit_tiny_patch16", 192, 12, 3},
      {"vit_small_patch16", 384, 12, 6},
      {"vit_base_patch16", 768, 12, 12},
      {"vit_large_patch16", 1024, 24, 16},
  };
  return archs;
}

}  // namespace

VisionModel MakeTimmVit(const VisionModelOptions& o) {
  const VitArch* arch = nullptr;
  for (const VitArch& a : Architectures()) {
    if (o.name == a.name) arch = &a;
  }
  if (!arch) throw std::invalid_argument("not a ViT: " + o.name);

  VisionModel model;
  model.module = std::make_shared<nn::Module>("VisionTransformer");
  nn::Sequential blocks;
  PatchEmbedding embed(o.shape.channels, arch->dim, o.shape.image_size / kPatch);
  model.module->register_parameter("cls_token", embed->cls_token);
  model.module->register_parameter("pos_embed", embed->pos_embed);
  model.module->register_module("patch_embed", embed->patch_embed);
  blocks->push_back(embed);
  nn::Sequential layers;
  for (int i = 0; i < arch->depth; ++i) {
    if (!o.half_blocks) {
      VitBlock block(arch->dim, arch->heads);
      layers->push_back(block);
      blocks->push_back(block);
      continue;
    }
    // Two blocks; a plain module names their children as timm's block does.
    AttentionHalf first(arch->dim, arch->heads);
    MlpHalf second(arch->dim);
    auto names = std::make_shared<nn::Module>("Block");
    names->register_module("norm1", first->norm1);
    names->register_module("attn", first->attn);
    names->register_module("norm2", second->norm2);
    names->register_module("mlp", second->mlp);
    layers->register_module(std::to_string(i), names);
    blocks->push_back(first);
    blocks->push_back(second);
  }
  model.module->register_module("blocks", layers);
  VitHead head(arch->dim, o.classifier ? o.shape.num_classes : 0);
  model.module->register_module("norm", head->norm);
  if (o.classifier) model.module->register_module("head", head->head);
  blocks->push_back(head);
  InitLinears(*model.module);

  model.layers = blocks;
  model.blocks = BlocksFromSequential(blocks);
  model.features = arch->dim;
  return model;
}

torch::Tensor ResamplePositionEmbedding(const torch::Tensor& pos, int grid) {
  const int64_t tokens = pos.size(1) - 1;
  const auto old_grid = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(tokens))));
  if (pos.dim() != 3 || pos.size(0) != 1 || old_grid * old_grid != tokens) {
    throw std::invalid_argument("pos_embed of shape " + c10::str(pos.sizes()) +
                                " is not [1, 1 + g*g, D] for a square patch grid");
  }
  if (old_grid == grid) return pos;
  namespace F = nn::functional;
  const torch::Tensor cls = pos.slice(1, 0, 1);
  // timm interpolates in float32 and casts back.
  torch::Tensor patches = pos.slice(1, 1).reshape({1, old_grid, old_grid, -1}).permute({0, 3, 1, 2});
  patches = F::interpolate(patches.to(torch::kFloat32),
                           F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{grid, grid})
                               .mode(torch::kBicubic)
                               .align_corners(false)
                               .antialias(true))
                .to(pos.scalar_type());
  patches = patches.permute({0, 2, 3, 1}).reshape({1, grid * grid, -1});
  return torch::cat({cls, patches}, 1);
}

}  // namespace tspipe
