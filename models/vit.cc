#include "models/vit.h"

#include <cmath>
#include <stdexcept>

namespace tspipe {
namespace {

namespace nn = torch::nn;

// Patches by a strided convolution, then the class token in front and the
// learned positional embedding added: [N, 1 + P, dim].
class PatchEmbedImpl : public nn::Cloneable<PatchEmbedImpl> {
 public:
  explicit PatchEmbedImpl(const VitOptions& o) : o_(o) { reset(); }
  void reset() override {
    if (o_.image_size % o_.patch != 0) {
      throw std::invalid_argument("ViT patch size " + std::to_string(o_.patch) +
                                  " does not divide the image size " +
                                  std::to_string(o_.image_size));
    }
    const int patches = (o_.image_size / o_.patch) * (o_.image_size / o_.patch);
    proj_ = register_module(
        "proj", nn::Conv2d(nn::Conv2dOptions(o_.in_channels, o_.dim, o_.patch).stride(o_.patch)));
    cls_ = register_parameter("cls", torch::randn({1, 1, o_.dim}) * 0.02);
    pos_ = register_parameter("pos", torch::randn({1, 1 + patches, o_.dim}) * 0.02);
  }
  torch::Tensor forward(torch::Tensor x) {
    torch::Tensor tokens = proj_(x).flatten(2).transpose(1, 2);  // [N, P, dim]
    return torch::cat({cls_.expand({x.size(0), 1, o_.dim}), tokens}, 1) + pos_;
  }

 private:
  VitOptions o_;
  nn::Conv2d proj_{nullptr};
  torch::Tensor cls_, pos_;
};
TORCH_MODULE(PatchEmbed);

// Pre-norm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x)).
class TransformerBlockImpl : public nn::Cloneable<TransformerBlockImpl> {
 public:
  explicit TransformerBlockImpl(const VitOptions& o) : o_(o) { reset(); }
  void reset() override {
    if (o_.dim % o_.heads != 0) {
      throw std::invalid_argument("ViT width " + std::to_string(o_.dim) + " is not divisible by " +
                                  std::to_string(o_.heads) + " heads");
    }
    norm1_ = register_module("norm1", nn::LayerNorm(nn::LayerNormOptions({o_.dim})));
    qkv_ = register_module("qkv", nn::Linear(o_.dim, 3 * o_.dim));
    out_ = register_module("out", nn::Linear(o_.dim, o_.dim));
    norm2_ = register_module("norm2", nn::LayerNorm(nn::LayerNormOptions({o_.dim})));
    fc1_ = register_module("fc1", nn::Linear(o_.dim, o_.dim * o_.mlp_ratio));
    fc2_ = register_module("fc2", nn::Linear(o_.dim * o_.mlp_ratio, o_.dim));
  }
  torch::Tensor forward(torch::Tensor x) {
    const int64_t n = x.size(0), t = x.size(1), h = o_.heads, d = o_.dim / o_.heads;
    // [3, N, heads, T, d]
    torch::Tensor qkv = qkv_(norm1_(x)).view({n, t, 3, h, d}).permute({2, 0, 3, 1, 4});
    torch::Tensor attn = torch::softmax(
        torch::matmul(qkv[0], qkv[1].transpose(-2, -1)) / std::sqrt(static_cast<double>(d)), -1);
    torch::Tensor y = torch::matmul(attn, qkv[2]).transpose(1, 2).reshape({n, t, o_.dim});
    x = x + out_(y);
    return x + fc2_(torch::gelu(fc1_(norm2_(x))));
  }

 private:
  VitOptions o_;
  nn::LayerNorm norm1_{nullptr}, norm2_{nullptr};
  nn::Linear qkv_{nullptr}, out_{nullptr}, fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(TransformerBlock);

// Final layer norm; the class token is the representation.
class ClassTokenImpl : public nn::Cloneable<ClassTokenImpl> {
 public:
  explicit ClassTokenImpl(int dim) : dim_(dim) { reset(); }
  void reset() override { norm_ = register_module("norm", nn::LayerNorm(nn::LayerNormOptions({dim_}))); }
  torch::Tensor forward(torch::Tensor x) { return norm_(x).select(1, 0); }

 private:
  int dim_;
  nn::LayerNorm norm_{nullptr};
};
TORCH_MODULE(ClassToken);


}  // namespace

void MocoMlpImpl::reset() {
  seq_ = nn::Sequential();
  for (int l = 0; l < layers_; ++l) {
    const int a = l == 0 ? in_ : hidden_;
    const int b = l == layers_ - 1 ? out_ : hidden_;
    seq_->push_back(nn::Linear(nn::LinearOptions(a, b).bias(false)));
    if (l < layers_ - 1) {
      seq_->push_back(nn::BatchNorm1d(b));
      seq_->push_back(nn::ReLU());
    } else if (last_bn_) {
      seq_->push_back(nn::BatchNorm1d(nn::BatchNormOptions(b).affine(false)));
    }
  }
  seq_ = register_module("mlp", seq_);
}

torch::Tensor MocoMlpImpl::forward(torch::Tensor x) { return seq_->forward(x); }

int AddVitEncoder(const VitOptions& o, nn::Sequential& model) {
  model->push_back(PatchEmbed(o));
  for (int i = 0; i < o.depth; ++i) model->push_back(TransformerBlock(o));
  model->push_back(ClassToken(o.dim));
  return o.dim;
}

torch::nn::Sequential MakeMocoV3Online(const MocoNetOptions& o) {
  nn::Sequential model;
  const int features = AddVitEncoder(o.encoder, model);
  model->push_back(MocoMlp(3, features, o.hidden, o.projection, /*last_bn=*/true));
  model->push_back(MocoMlp(2, o.projection, o.hidden, o.projection, /*last_bn=*/false));
  return model;
}

int MocoEncoderBlocks(const MocoNetOptions& o) { return o.encoder.depth + 2; }

}  // namespace tspipe
