#include "algorithms/codistill.h"

#include <stdexcept>

#include "algorithms/image_recipe.h"
#include "engine/recipe.h"
#include "models/resnet.h"

namespace tspipe {

Workload Codistillation::workload() const {
  Workload w;
  // Stale copies of the other models; their TeacherUpdate is the exchange
  // (ExchangesAt says when). Per-sample terms.
  w.teacher = TeacherKind::kPeers;
  return w;
}

torch::Tensor CodistillLoss(const torch::Tensor& logits, const std::vector<torch::Tensor>& peers,
                            const torch::Tensor& labels, const CodistillOptions& o,
                            double alpha) {
  namespace F = torch::nn::functional;
  torch::Tensor loss = F::cross_entropy(logits, labels);
  if (alpha == 0 || peers.empty()) return loss;
  torch::Tensor distill;
  for (const torch::Tensor& p : peers) {
    const torch::Tensor target = p.detach();
    torch::Tensor d;
    if (o.divergence == "mse") {
      d = (logits - target).pow(2).sum(1).mean();
    } else {
      const double t = o.temperature;
      d = F::kl_div(F::log_softmax(logits / t, F::LogSoftmaxFuncOptions(1)),
                    F::softmax(target / t, F::SoftmaxFuncOptions(1)),
                    F::KLDivFuncOptions().reduction(torch::kBatchMean)) *
          (t * t);
    }
    distill = distill.defined() ? distill + d : d;
  }
  return loss + alpha / static_cast<double>(peers.size()) * distill;
}

torch::Tensor Codistillation::Loss(const LossInputs& in) const {
  TORCH_CHECK(in.student && !in.student->empty(), "codistillation needs the model's logits");
  TORCH_CHECK(in.teacher && static_cast<int>(in.teacher->size()) == options_.models - 1,
              "codistillation needs the logits of ", options_.models - 1, " peers");
  TORCH_CHECK(in.targets && !in.targets->empty(), "codistillation needs labels");
  const double alpha = in.step <= options_.burn_in ? 0.0 : options_.alpha;
  return CodistillLoss((*in.student)[0], *in.teacher, (*in.targets)[0], options_, alpha);
}

namespace {

// n networks of one architecture (the built-in ResNet on 28x28 images by
// default, or any named one), each on its own share of every mini-batch.
class CodistillRecipe : public ImageRecipe {
 public:
  std::vector<OptionSpec> Options() const override {
    std::vector<OptionSpec> o =
        ImageNetworkOptions("student", "", "every model's", {16, 32, 64}, {1, 1, 1});
    o.push_back(SmallStemOption());
    o.push_back(HalfBlocksOption());
    for (OptionSpec& s : ImageShapeOptions()) o.push_back(s);
    const CodistillOptions d;
    o.push_back(IntOption("models", d.models, "models trained together (n)").AtLeast(2));
    o.push_back(IntOption("exchange_every", d.exchange_every,
                          "K: models exchange parameters after every K-th step")
                    .AtLeast(1));
    o.push_back(DoubleOption("alpha", d.alpha, "weight of the distillation term").AtLeast(0));
    o.push_back(DoubleOption("temperature", d.temperature, "softmax temperature of D=kl").Above(0));
    o.push_back(StringOption("divergence", d.divergence,
                             "D: kl = KL(peer || model) of softened predictions, or mse of logits")
                    .OneOf({"kl", "mse"}));
    o.push_back(IntOption("burn_in", d.burn_in, "first steps trained with alpha = 0").AtLeast(0));
    return o;
  }
  void Configure(const OptionValues& v) override {
    ConfigureImageShape(v);
    network_ = ImageNetworkFrom(v, "student", "", "codistill", image_shape());
    options_.models = v.GetInt("models");
    options_.exchange_every = v.GetInt("exchange_every");
    options_.alpha = v.GetDouble("alpha");
    options_.temperature = v.GetDouble("temperature");
    options_.divergence = v.GetString("divergence");
    options_.burn_in = v.GetInt("burn_in");
  }
  std::unique_ptr<Algorithm> MakeAlgorithm() const override {
    return std::make_unique<Codistillation>(options_);
  }
  int num_models() const override { return options_.models; }
  ModelSet BuildModels() const override {
    ModelSet m;
    ImageNetwork net = BuildImageNetwork(network_, image_shape());
    m.student = net.module;
    m.student_blocks = net.blocks;
    m.student_shape = net.shape;
    m.adapt_student_file = net.adapt_file;
    return m;  // The engine makes the teachers: copies of the peers.
  }
  // Each model's copies of its peers are cut like the model.
  CutRule cut_rule() const override { return {CutRule::Kind::kShared, 0}; }
  // Each model's test accuracy, their mean, and the ensemble's (averaged
  // softmax).
  Metrics Evaluate(const EvalContext& c) const override {
    Metrics m;
    torch::Tensor labels = TestLabels(c, image_shape());
    torch::Tensor ensemble;
    double sum = 0;
    for (int g = 0; g < c.num_models(); ++g) {
      torch::Tensor logits = TestLogits(c, image_shape(), g);
      const double top1 = logits.argmax(1).eq(labels).to(torch::kFloat64).mean().item<double>();
      m.emplace_back("top1_model" + std::to_string(g), top1);
      sum += top1;
      torch::Tensor p = torch::softmax(logits, 1);
      ensemble = ensemble.defined() ? ensemble + p : p;
    }
    m.emplace_back("top1", sum / c.num_models());
    m.emplace_back("top1_ensemble",
                   ensemble.argmax(1).eq(labels).to(torch::kFloat64).mean().item<double>());
    return m;
  }

 private:
  ImageNetworkChoice network_;
  CodistillOptions options_;
};

}  // namespace

TSPIPE_REGISTER_RECIPE("codistill",
                       "codistillation: n ResNets, each on its own share of the batch, each "
                       "distilled from stale copies of the others refreshed every K steps",
                       CodistillRecipe);

}  // namespace tspipe
