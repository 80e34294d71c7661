#include "algorithms/byol.h"

#include <memory>
#include <stdexcept>

#include "algorithms/image_recipe.h"
#include "engine/recipe.h"
#include "algorithms/momentum.h"
#include "models/resnet.h"
#include "models/vision_models.h"

namespace tspipe {

double ByolMomentum(const ByolOptions& o, int step) {
  return CosineMomentum(o.base_momentum, step, o.total_steps);
}

torch::Tensor ByolLoss(const torch::Tensor& p1, const torch::Tensor& p2, const torch::Tensor& z1,
                       const torch::Tensor& z2) {
  namespace F = torch::nn::functional;
  auto term = [](const torch::Tensor& p, const torch::Tensor& z) {
    // The target is a fixed regression target: no gradient through it.
    return (2.0 - 2.0 * F::cosine_similarity(p, z.detach(),
                                             F::CosineSimilarityFuncOptions().dim(1)))
        .mean();
  };
  return term(p1, z2) + term(p2, z1);
}

Workload Byol::workload() const {
  Workload w;
  w.teacher = TeacherKind::kMomentum;
  // A mean of per-sample terms: splitting the batch (data parallel) is exact.
  w.full_batch_loss = false;
  return w;
}

torch::Tensor Byol::Loss(const LossInputs& in) const {
  TORCH_CHECK(in.student != nullptr && in.student->size() == 2,
              "byol needs two views from the online network");
  TORCH_CHECK(in.teacher != nullptr && in.teacher->size() == 2,
              "byol needs two views from the target network");
  return ByolLoss((*in.student)[0], (*in.student)[1], (*in.teacher)[0], (*in.teacher)[1]);
}

namespace {

// BYOL on two augmented views: a ResNet encoder (the built-in one on 28x28
// images by default, or any named network at any image shape) with
// projector and predictor, its EMA target cut like it.
class ByolRecipe : public ImageRecipe {
 public:
  ByolRecipe() : ImageRecipe(/*views=*/2) {}

  std::vector<OptionSpec> Options() const override {
    std::vector<OptionSpec> o =
        ImageNetworkOptions("encoder", "", "encoder", {16, 32, 64}, {1, 1, 1});
    o.push_back(SmallStemOption());
    o.push_back(HalfBlocksOption());
    for (OptionSpec& s : ImageShapeOptions()) o.push_back(s);
    o.push_back(IntOption("hidden", 256, "projector and predictor hidden width").AtLeast(1));
    o.push_back(IntOption("projection", 64, "projection size").AtLeast(1));
    o.push_back(DoubleOption("base_momentum", ByolOptions().base_momentum,
                             "EMA momentum at step 0, cosine-ramped to 1 over the run")
                    .AtLeast(0)
                    .AtMost(1));
    return o;
  }
  void Configure(const OptionValues& v) override {
    ConfigureImageShape(v);
    encoder_ = ImageNetworkFrom(v, "encoder", "", "byol", image_shape());
    shape_.encoder = encoder_.small;
    shape_.encoder.in_channels = image_shape().channels;
    shape_.hidden = v.GetInt("hidden");
    shape_.projection = v.GetInt("projection");
    byol_.base_momentum = v.GetDouble("base_momentum");
  }
  std::unique_ptr<Algorithm> MakeAlgorithm() const override {
    return std::make_unique<Byol>(byol_);
  }
  bool named() const { return encoder_.name != kSmallResNet; }
  VisionModelOptions EncoderOptions() const {
    return VisionOptionsOf(encoder_, image_shape());
  }
  ModelSet BuildModels() const override {
    if (named()) {
      const int features = VisionModelFeatures(EncoderOptions());
      return MakeMomentumPair(
          EncoderOptions(),
          {{"projector", torch::nn::AnyModule(ByolMlp(features, shape_.hidden, shape_.projection))},
           {"predictor",
            torch::nn::AnyModule(ByolMlp(shape_.projection, shape_.hidden, shape_.projection))}});
    }
    ModelSet m;
    torch::nn::Sequential online = MakeByolOnline(shape_);
    torch::nn::Sequential target = MakeMomentumTarget(online);
    m.student = online.ptr();
    m.student_blocks = MultiViewBlocksFromSequential(online);
    m.teacher = target.ptr();
    m.teacher_blocks = MultiViewBlocksFromSequential(target);
    m.student_shape = DescribeShape(shape_.encoder) + ", hidden " +
                      std::to_string(shape_.hidden) + ", projection " +
                      std::to_string(shape_.projection);
    m.teacher_shape = "its target";
    return m;
  }
  // The EMA zips online and target stage by stage; the predictor is the
  // online network's extra last block.
  CutRule cut_rule() const override { return {CutRule::Kind::kShared, 1}; }
  void StudentLoaded(ModelSet& m) const override {
    if (named()) return ResetMomentumTarget(m);
    auto online = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(m.student);
    CopyState(*MakeMomentumTarget(torch::nn::Sequential(online)), *m.teacher);
  }
  Metrics Evaluate(const EvalContext& c) const override {
    const int encoder_blocks =
        named() ? VisionModelBlocks(EncoderOptions()) : ByolEncoderBlocks(shape_);
    return {{"linear_top1", LinearProbeTop1(c, image_shape(), encoder_blocks)}};
  }

 private:
  ImageNetworkChoice encoder_;
  ByolNetOptions shape_;
  ByolOptions byol_;
};

}  // namespace

TSPIPE_REGISTER_RECIPE("byol",
                       "BYOL: an online network (ResNets and ViTs by name) predicts its EMA "
                       "target's projection of another view",
                       ByolRecipe);

}  // namespace tspipe
