#include "data/image_data.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <stdexcept>
#include <utility>

#include "data/idx.h"

namespace tspipe {

const char kFashionMnist[] = "fashion_mnist";

namespace {

std::string DirOf(const std::string& dir) { return dir.empty() ? kDefaultFashionMnistDir : dir; }

}  // namespace

torch::Tensor ToImageShape(const torch::Tensor& images, const ImageShape& shape) {
  torch::Tensor out = images;
  if (out.size(-1) != shape.image_size || out.size(-2) != shape.image_size) {
    namespace F = torch::nn::functional;
    out = F::interpolate(out, F::InterpolateFuncOptions()
                                  .size(std::vector<int64_t>{shape.image_size, shape.image_size})
                                  .mode(torch::kBilinear)
                                  .align_corners(false));
  }
  if (out.size(1) != shape.channels) out = out.expand({-1, shape.channels, -1, -1}).contiguous();
  return out;
}

void CheckFashionMnistFits(const ImageShape& shape) {
  if (shape.num_classes < 10) {
    throw std::invalid_argument("fashion_mnist has 10 classes; num_classes=" +
                                std::to_string(shape.num_classes) + " cannot hold them");
  }
}

std::shared_ptr<const LabeledImages> FashionMnistImages(const std::string& given, bool train) {
  const std::string dir = DirOf(given);
  static std::mutex mu;
  static std::map<std::pair<std::string, bool>, std::shared_ptr<const LabeledImages>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[{dir, train}];
  if (slot) return slot;
  FashionMnistSplit split = LoadFashionMnist(dir, train);
  const int64_t n = split.images.dims[0];
  auto set = std::make_shared<LabeledImages>();
  torch::Tensor bytes =
      torch::from_blob(split.images.data.data(),
                       {n, 1, split.images.dims[1], split.images.dims[2]}, torch::kUInt8);
  // Mean and standard deviation of the Fashion-MNIST train pixels.
  set->images = (bytes.to(torch::kFloat32) / 255.0 - 0.2860) / 0.3530;
  set->labels = torch::from_blob(split.labels.data.data(), {n}, torch::kUInt8).to(torch::kInt64);
  slot = set;
  return slot;
}

namespace {

class ImageSource : public BatchSource {
 public:
  ImageSource(const DataRequest& r, const ImageDataOptions& o)
      : request_(r), options_(o), augment_(at::detail::createCPUGenerator(
                                      static_cast<uint64_t>(r.seed) + 1)) {
    if (r.data == "synthetic") {
      for (int i = 0; i < std::max(1, r.num_batches); ++i) {
        const ImageShape& s = o.shape;
        synthetic_.push_back(WithViews(
            Batch{{torch::randn({r.batch_size, s.channels, s.image_size, s.image_size})},
                  {torch::randint(0, s.num_classes, {r.batch_size})}}));
      }
      return;
    }
    if (r.data != kFashionMnist) {
      throw std::invalid_argument("unknown data '" + r.data + "'; use synthetic or " +
                                  kFashionMnist);
    }
    CheckFashionMnistFits(o.shape);
    train_set_ = FashionMnistImages(r.data_dir, /*train=*/true);
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
    return WithViews(Batch{{ToImageShape(train_set_->images.index_select(0, index), options_.shape)},
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
  std::shared_ptr<const LabeledImages> train_set_;
  int64_t size_ = 0;
  std::mt19937_64 shuffle_;
  std::vector<int64_t> order_;
  size_t position_ = 0;
};

}  // namespace

std::unique_ptr<BatchSource> MakeImageData(const DataRequest& request,
                                           const ImageDataOptions& options) {
  return std::make_unique<ImageSource>(request, options);
}

Activation ImageExample(int64_t samples, int views, const ImageShape& shape) {
  Activation input;
  for (int v = 0; v < std::max(1, views); ++v) {
    input.push_back(torch::randn({samples, shape.channels, shape.image_size, shape.image_size}));
  }
  return input;
}

}  // namespace tspipe
