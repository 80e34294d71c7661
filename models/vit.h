// A small Vision Transformer for 28x28 images and MoCo v3's networks over it,
// written as block sequences so that any balance partitions them.
#ifndef TSPIPE_MODELS_VIT_H_
#define TSPIPE_MODELS_VIT_H_

#include <torch/torch.h>

namespace tspipe {

struct VitOptions {
  int image_size = 28;
  int in_channels = 1;
  int patch = 4;  // 7 x 7 = 49 patches at 28x28.
  int dim = 64;
  int depth = 4;
  int heads = 4;
  int mlp_ratio = 2;
};

// Encoder blocks appended to `model`: patch embedding (with class token and
// learned positions), `depth` pre-norm transformer blocks, final norm taking
// the class token. Returns the feature width (dim).
int AddVitEncoder(const VitOptions& options, torch::nn::Sequential& model);

// MoCo v3's MLP: Linear (no bias) layers with BN and ReLU between them;
// optionally a BN without affine parameters on the output.
class MocoMlpImpl : public torch::nn::Cloneable<MocoMlpImpl> {
 public:
  MocoMlpImpl(int layers, int in, int hidden, int out, bool last_bn)
      : layers_(layers), in_(in), hidden_(hidden), out_(out), last_bn_(last_bn) {
    reset();
  }
  void reset() override;
  torch::Tensor forward(torch::Tensor x);

 private:
  int layers_, in_, hidden_, out_;
  bool last_bn_;
  torch::nn::Sequential seq_{nullptr};
};
TORCH_MODULE(MocoMlp);

// MoCo v3 (Chen, Xie and He 2021) networks.
struct MocoNetOptions {
  VitOptions encoder;
  int hidden = 256;      // MLP hidden width (4096 in the paper).
  int projection = 64;   // Output size (256 in the paper).
};

// Online network: ViT encoder blocks (MocoEncoderBlocks() of them), then the
// projector (3 layers, BN on the output as in the paper) and the predictor
// (2 layers) as one block each. The momentum encoder is
// MakeMomentumTarget(online) (algorithms/momentum.h).
torch::nn::Sequential MakeMocoV3Online(const MocoNetOptions& options);
int MocoEncoderBlocks(const MocoNetOptions& options);

}  // namespace tspipe

#endif  // TSPIPE_MODELS_VIT_H_
