#include "algorithms/image_data.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <stdexcept>
#include <utility>

#include "core/idx.h"

namespace tspipe {

const char kFashionMnist[] = "fashion_mnist";

namespace {

// Fashion-MNIST as normalised float tensors.
struct ImageSet {
  torch::Tensor images;  // [N, 1, 28, 28], float, normalised.
  torch::Tensor labels;  // [N], int64.
};

// Loaded once per process (several trainers of one run share it).
std::shared_ptr<const ImageSet> LoadImages(const std::string& dir, bool train) {
  static std::mutex mu;
  static std::map<std::pair<std::string, bool>, std::shared_ptr<const ImageSet>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[{dir, train}];
  if (slot) return slot;
  FashionMnistSplit split = LoadFashionMnist(dir, train);
  const int64_t n = split.images.dims[0];
  auto set = std::make_shared<ImageSet>();
  torch::Tensor bytes =
      torch::from_blob(split.images.data.data(),
                       {n, 1, split.images.dims[1], split.images.dims[2]}, torch::kUInt8);
  // Mean and standard deviation of the Fashion-MNIST train pixels.
  set->images = (bytes.to(torch::kFloat32) / 255.0 - 0.2860) / 0.3530;
  set->labels = torch::from_blob(split.labels.data.data(), {n}, torch::kUInt8).to(torch::kInt64);
  slot = set;
  return slot;
}

std::string DirOf(const std::string& dir) { return dir.empty() ? kDefaultFashionMnistDir : dir; }

class ImageSource : public BatchSource {
 public:
  ImageSource(const DataRequest& r, const ImageDataOptions& o)
      : request_(r), options_(o), augment_(at::detail::createCPUGenerator(
                                      static_cast<uint64_t>(r.seed) + 1)) {
    if (r.data == "synthetic") {
      for (int i = 0; i < std::max(1, r.num_batches); ++i) {
        synthetic_.push_back(WithViews(Batch{{torch::randn({r.batch_size, 1, 28, 28})},
                                             {torch::randint(0, 10, {r.batch_size})}}));
      }
      return;
    }
    if (r.data != kFashionMnist) {
      throw std::invalid_argument("unknown data '" + r.data + "'; use synthetic or " +
                                  kFashionMnist);
    }
    train_set_ = LoadImages(DirOf(r.data_dir), /*train=*/true);
    size_ = train_set_->images.size(0);
    if (r.train_samples > 0) size_ = std::min<int64_t>(size_, r.train_samples);
    if (size_ < r.batch_size) {
      throw std::invalid_argument("the training set has " + std::to_string(size_) +
                                  " images, fewer than one batch of " +
                                  std::to_string(r.batch_size));
    }
    shuffle_.seed(static_cast<uint64_t>(r.seed));
  }

  Batch Next() override {
    if (!synthetic_.empty()) return synthetic_[next_synthetic_++ % synthetic_.size()];
    const size_t b = static_cast<size_t>(request_.batch_size);
    if (order_.size() - position_ < b) {
      // A new epoch (the incomplete tail of the last one is dropped).
      order_.resize(size_);
      std::iota(order_.begin(), order_.end(), 0);
      std::shuffle(order_.begin(), order_.end(), shuffle_);
      position_ = 0;
    }
    torch::Tensor index =
        torch::from_blob(order_.data() + position_, {request_.batch_size}, torch::kInt64).clone();
    position_ += b;
    return WithViews(Batch{{train_set_->images.index_select(0, index)},
                           {train_set_->labels.index_select(0, index)}});
  }

  int64_t size() const override { return synthetic_.empty() ? size_ : 0; }

 private:
  // Self-supervised methods train on augmented views instead of images.
  Batch WithViews(Batch b) {
    if (options_.views == 0) return b;
    Activation views;
    for (int v = 0; v < options_.views; ++v) {
      views.push_back(Augment(b.inputs[0], options_.augment, augment_));
    }
    b.inputs = std::move(views);
    return b;
  }

  DataRequest request_;
  ImageDataOptions options_;
  at::Generator augment_;
  std::vector<Batch> synthetic_;
  size_t next_synthetic_ = 0;
  std::shared_ptr<const ImageSet> train_set_;
  int64_t size_ = 0;
  std::mt19937_64 shuffle_;
  std::vector<int64_t> order_;
  size_t position_ = 0;
};

// The student's first `blocks` blocks (-1 = all) on `images`, 500 at a time,
// concatenated on the CPU.
torch::Tensor ForwardInChunks(const EvalContext& context, const torch::Tensor& images,
                              int64_t n, int blocks, int model = 0) {
  std::vector<torch::Tensor> out;
  for (int64_t begin = 0; begin < n; begin += 500) {
    Activation x{images.slice(0, begin, std::min(n, begin + 500))};
    out.push_back(context.ForwardStudent(x, blocks, model)[0].to(torch::kCPU));
  }
  return torch::cat(out);
}

int64_t Limited(int64_t n, int limit) { return limit > 0 ? std::min<int64_t>(n, limit) : n; }

}  // namespace

std::unique_ptr<BatchSource> MakeImageData(const DataRequest& request,
                                           const ImageDataOptions& options) {
  return std::make_unique<ImageSource>(request, options);
}

Activation ImageExample(int64_t samples, int views) {
  Activation input;
  for (int v = 0; v < std::max(1, views); ++v) input.push_back(torch::randn({samples, 1, 28, 28}));
  return input;
}

std::vector<OptionSpec> ResNetShapeOptions(const std::string& prefix, const std::string& what,
                                           const std::vector<int>& widths,
                                           const std::vector<int>& blocks) {
  return {IntListOption(prefix + "widths", widths,
                        what + " ResNet channels per group (each later group halves the "
                               "resolution)")
              .AtLeast(1),
          IntListOption(prefix + "blocks", blocks, what + " ResNet basic blocks per group")
              .AtLeast(1)};
}

ResNetOptions ResNetShapeFrom(const OptionValues& values, const std::string& prefix,
                              const std::string& owner) {
  ResNetOptions o;
  o.widths = values.GetInts(prefix + "widths");
  o.blocks_per_group = values.GetInts(prefix + "blocks");
  if (o.widths.size() != o.blocks_per_group.size()) {
    throw std::invalid_argument(owner + " options " + prefix + "widths=" +
                                FormatIntList(o.widths) + " and " + prefix + "blocks=" +
                                FormatIntList(o.blocks_per_group) +
                                " need the same number of entries (one block count per group)");
  }
  return o;
}

std::string DescribeShape(const ResNetOptions& shape) {
  return "widths " + FormatIntList(shape.widths) + ", blocks " +
         FormatIntList(shape.blocks_per_group);
}

double TestTop1(const EvalContext& context) {
  std::shared_ptr<const ImageSet> test = LoadImages(DirOf(context.request().data_dir), false);
  const int64_t n = Limited(test->images.size(0), context.request().test_limit);
  torch::Tensor predicted = ForwardInChunks(context, test->images, n, -1).argmax(1);
  return static_cast<double>(predicted.eq(test->labels.slice(0, 0, n)).sum().item<int64_t>()) /
         static_cast<double>(n);
}

torch::Tensor TestLogits(const EvalContext& context, int model) {
  std::shared_ptr<const ImageSet> test = LoadImages(DirOf(context.request().data_dir), false);
  const int64_t n = Limited(test->images.size(0), context.request().test_limit);
  return ForwardInChunks(context, test->images, n, -1, model);
}

torch::Tensor TestLabels(const EvalContext& context) {
  std::shared_ptr<const ImageSet> test = LoadImages(DirOf(context.request().data_dir), false);
  return test->labels.slice(0, 0, Limited(test->images.size(0), context.request().test_limit));
}

double LinearProbeTop1(const EvalContext& context, int encoder_blocks) {
  const std::string dir = DirOf(context.request().data_dir);
  auto features = [&](bool train, int limit) {
    std::shared_ptr<const ImageSet> set = LoadImages(dir, train);
    const int64_t n = Limited(set->images.size(0), limit);
    return std::make_pair(ForwardInChunks(context, set->images, n, encoder_blocks),
                          set->labels.slice(0, 0, n));
  };
  auto [train_x, train_y] = features(true, context.request().train_limit);
  auto [test_x, test_y] = features(false, context.request().test_limit);
  // Standardise with the train statistics, then multinomial logistic
  // regression by full-batch Adam (a convex problem; 300 steps converge on
  // these feature sizes).
  torch::Tensor mean = train_x.mean(0, true), std = train_x.std(0, true, true) + 1e-6;
  train_x = (train_x - mean) / std;
  test_x = (test_x - mean) / std;
  torch::nn::Linear classifier(train_x.size(1), 10);
  torch::optim::Adam opt(classifier->parameters(), torch::optim::AdamOptions(0.05));
  for (int it = 0; it < 300; ++it) {
    torch::Tensor loss = torch::nn::functional::cross_entropy(classifier(train_x), train_y) +
                         1e-4 * classifier->weight.pow(2).sum();
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  torch::NoGradGuard no_grad;
  torch::Tensor predicted = classifier(test_x).argmax(1);
  return predicted.eq(test_y).to(torch::kFloat64).mean().item<double>();
}

}  // namespace tspipe
