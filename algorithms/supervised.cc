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

// A network trained on labels (kd_accuracy trains its teacher with it): the
// built-in ResNet on 28x28 images by default, or any named network at any
// image shape.
class SupervisedRecipe : public ImageRecipe {
 public:
  std::vector<OptionSpec> Options() const override {
    std::vector<OptionSpec> o = ImageNetworkOptions("student", "", "trained", {16, 32, 64}, {1, 1, 1});
    o.push_back(SmallStemOption());
    o.push_back(HalfBlocksOption());
    for (OptionSpec& s : ImageShapeOptions()) o.push_back(s);
    return o;
  }
  void Configure(const OptionValues& v) override {
    ConfigureImageShape(v);
    network_ = ImageNetworkFrom(v, "student", "", "supervised", image_shape());
  }
  std::unique_ptr<Algorithm> MakeAlgorithm() const override {
    return std::make_unique<SupervisedAlgorithm>();
  }
  ModelSet BuildModels() const override {
    ModelSet m;
    ImageNetwork net = BuildImageNetwork(network_, image_shape());
    m.student = net.module;
    m.student_blocks = net.blocks;
    m.student_shape = net.shape;
    m.adapt_student_file = net.adapt_file;
    return m;
  }

 private:
  ImageNetworkChoice network_;
};

}  // namespace

TSPIPE_REGISTER_RECIPE("supervised", "cross-entropy on labels, no teacher; ResNets and ViTs by name",
                       SupervisedRecipe);

}  // namespace tspipe
