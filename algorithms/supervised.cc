#include "algorithms/supervised.h"

#include "algorithms/image_recipe.h"
#include "engine/recipe.h"
#include "models/resnet.h"

namespace tspipe {

Workload SupervisedAlgorithm::workload() const {
  Workload w;
  // No teacher; a per-sample loss: any micro-batching is exact.
  return w;
}

torch::Tensor SupervisedAlgorithm::Loss(const LossInputs& in) const {
  TORCH_CHECK(in.student && !in.student->empty(), "supervised loss needs student logits");
  TORCH_CHECK(in.targets && !in.targets->empty(), "supervised loss needs labels");
  return torch::nn::functional::cross_entropy((*in.student)[0], (*in.targets)[0]);
}

namespace {

// A ResNet trained on labels, on 28x28 images (kd_accuracy trains its
// teacher with it).
class SupervisedRecipe : public ImageRecipe {
 public:
  std::vector<OptionSpec> Options() const override {
    return ResNetShapeOptions("", "the", {16, 32, 64}, {1, 1, 1});
  }
  void Configure(const OptionValues& v) override { shape_ = ResNetShapeFrom(v, "", "supervised"); }
  std::unique_ptr<Algorithm> MakeAlgorithm() const override {
    return std::make_unique<SupervisedAlgorithm>();
  }
  ModelSet BuildModels() const override {
    ModelSet m;
    torch::nn::Sequential net = MakeResNet(shape_);
    m.student = net.ptr();
    m.student_blocks = BlocksFromSequential(net);
    m.student_shape = DescribeShape(shape_);
    return m;
  }

 private:
  ResNetOptions shape_;
};

}  // namespace

TSPIPE_REGISTER_RECIPE("supervised", "cross-entropy on labels, no teacher (ResNet)",
                       SupervisedRecipe);

}  // namespace tspipe
