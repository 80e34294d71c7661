#include "models/mirror_student.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace tspipe {
namespace {

namespace nn = torch::nn;

// A bottleneck with a depthwise middle: 1x1 down to `mid` channels, 3x3
// depthwise with the block's stride, 1x1 up to `out`, batch norm after each
// and ReLU after the first two; then the input added when the shape is
// kept, and ReLU.
class SeparableBlockImpl : public nn::Cloneable<SeparableBlockImpl> {
 public:
  SeparableBlockImpl(int in, int mid, int out, int stride)
      : in_(in), mid_(mid), out_(out), stride_(stride) {
    reset();
  }
  void reset() override {
    reduce = register_module("reduce", nn::Conv2d(nn::Conv2dOptions(in_, mid_, 1).bias(false)));
    bn1 = register_module("bn1", nn::BatchNorm2d(mid_));
    depthwise = register_module(
        "depthwise", nn::Conv2d(nn::Conv2dOptions(mid_, mid_, 3).stride(stride_).padding(1).groups(mid_).bias(false)));
    bn2 = register_module("bn2", nn::BatchNorm2d(mid_));
    expand = register_module("expand", nn::Conv2d(nn::Conv2dOptions(mid_, out_, 1).bias(false)));
    bn3 = register_module("bn3", nn::BatchNorm2d(out_));
  }
  torch::Tensor forward(torch::Tensor x) {
    torch::Tensor y = torch::relu(bn1(reduce(x)));
    y = bn3(expand(torch::relu(bn2(depthwise(y)))));
    if (in_ == out_ && stride_ == 1) y = y + x;
    return torch::relu(y);
  }

  nn::Conv2d reduce{nullptr}, depthwise{nullptr}, expand{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};

 private:
  int in_, mid_, out_, stride_;
};
TORCH_MODULE(SeparableBlock);

// Pre-norm transformer block with an MLP as wide as the tokens.
class NarrowTransformerBlockImpl : public nn::Cloneable<NarrowTransformerBlockImpl> {
 public:
  NarrowTransformerBlockImpl(int dim, int heads) : dim_(dim), heads_(heads) { reset(); }
  void reset() override {
    norm1 = register_module("norm1", nn::LayerNorm(nn::LayerNormOptions({dim_}).eps(1e-6)));
    qkv = register_module("qkv", nn::Linear(dim_, 3 * dim_));
    proj = register_module("proj", nn::Linear(dim_, dim_));
    norm2 = register_module("norm2", nn::LayerNorm(nn::LayerNormOptions({dim_}).eps(1e-6)));
    fc1 = register_module("fc1", nn::Linear(dim_, dim_));
    fc2 = register_module("fc2", nn::Linear(dim_, dim_));
  }
  torch::Tensor forward(torch::Tensor x) {
    const int64_t n = x.size(0), t = x.size(1), h = heads_, d = dim_ / heads_;
    torch::Tensor q_k_v = qkv(norm1(x)).reshape({n, t, 3, h, d}).permute({2, 0, 3, 1, 4});
    torch::Tensor a = at::scaled_dot_product_attention(q_k_v[0], q_k_v[1], q_k_v[2]);
    x = x + proj(a.transpose(1, 2).reshape({n, t, dim_}));
    return x + fc2(torch::gelu(fc1(norm2(x))));
  }

  nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  nn::Linear qkv{nullptr}, proj{nullptr}, fc1{nullptr}, fc2{nullptr};

 private:
  int dim_, heads_;
};
TORCH_MODULE(NarrowTransformerBlock);

std::string Describe(const torch::IntArrayRef& sizes) {
  std::ostringstream s;
  s << sizes;
  return s.str();
}

bool EndsWith(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// New initial values for a copy of a teacher block, so the student does not
// start from the teacher's (possibly pretrained) weights: PyTorch's default
// for weight matrices and kernels, ones and zeros for norms and biases,
// normal(0.02) for other tensors (class tokens, position embeddings), fresh
// batch-norm statistics.
void Reinitialize(nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.named_parameters()) {
    torch::Tensor t = p.value();
    if (EndsWith(p.key(), "weight") && t.dim() >= 2) {
      nn::init::kaiming_uniform_(t, std::sqrt(5.0));
    } else if (EndsWith(p.key(), "weight")) {
      t.fill_(1.0);
    } else if (EndsWith(p.key(), "bias")) {
      t.zero_();
    } else {
      t.normal_(0.0, 0.02);
    }
  }
  // Batch-norm statistics start afresh; other buffers (fixed tables) stay.
  for (auto& b : module.named_buffers()) {
    if (EndsWith(b.key(), "running_var")) {
      b.value().fill_(1);
    } else if (EndsWith(b.key(), "running_mean") || EndsWith(b.key(), "num_batches_tracked")) {
      b.value().zero_();
    }
  }
}

Block Wrap(nn::AnyModule module) { return std::make_shared<TensorBlockImpl>(std::move(module)); }

// The student's stand-in for a body block mapping `in` to `out`.
Block BodyBlock(size_t index, const torch::Tensor& in, const torch::Tensor& out) {
  if (in.dim() == 4 && out.dim() == 4) {
    const int64_t h_in = in.size(2), h_out = out.size(2);
    const int64_t stride = std::max<int64_t>(1, (h_in + h_out - 1) / h_out);
    if ((h_in + stride - 1) / stride == h_out && (in.size(3) + stride - 1) / stride == out.size(3)) {
      const int c_in = static_cast<int>(in.size(1)), c_out = static_cast<int>(out.size(1));
      const int mid = std::max(8, std::min(c_in, c_out) / 4);
      return Wrap(nn::AnyModule(SeparableBlock(c_in, mid, c_out, static_cast<int>(stride))));
    }
  } else if (in.dim() == 3 && in.sizes() == out.sizes() && in.size(2) % 64 == 0) {
    const int dim = static_cast<int>(in.size(2));
    return Wrap(nn::AnyModule(NarrowTransformerBlock(dim, dim / 64)));
  }
  throw std::invalid_argument("blockwise: no student block mirrors teacher block " +
                              std::to_string(index) + ", which maps " + Describe(in.sizes()) +
                              " to " + Describe(out.sizes()) +
                              " (convolutional blocks and token blocks of width 64k are mirrored)");
}

}  // namespace

MirrorStudent MakeMirrorStudent(const BlockList& teacher, const ImageShape& shape) {
  if (teacher.size() < 2) {
    throw std::invalid_argument("blockwise: a teacher of " + std::to_string(teacher.size()) +
                                " block(s) has no stem and head to mirror");
  }
  // Each teacher block's input and output, on one blank image in eval mode
  // (batch norm then reads its statistics and updates nothing).
  std::vector<torch::Tensor> edges;
  {
    torch::NoGradGuard no_grad;
    std::vector<bool> training;
    for (const Block& b : teacher) {
      training.push_back(b->is_training());
      b->eval();
    }
    auto restore = [&] {
      for (size_t i = 0; i < teacher.size(); ++i) teacher[i]->train(training[i]);
    };
    try {
      Activation x = {torch::zeros({1, shape.channels, shape.image_size, shape.image_size})};
      edges.push_back(x[0]);
      for (const Block& b : teacher) {
        x = b->Forward(x);
        edges.push_back(x[0]);
      }
    } catch (...) {
      restore();
      throw;
    }
    restore();
  }

  MirrorStudent student;
  student.module = std::make_shared<nn::Module>("MirrorStudent");
  for (size_t i = 0; i < teacher.size(); ++i) {
    Block block;
    if (i == 0 || i + 1 == teacher.size()) {
      block = teacher[i]->Replicate();
      Reinitialize(*block);
    } else {
      block = BodyBlock(i, edges[i], edges[i + 1]);
    }
    student.module->register_module(std::to_string(i), block);
    student.blocks.push_back(block);
  }
  return student;
}

}  // namespace tspipe
