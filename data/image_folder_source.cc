#include "data/image_folder_source.h"

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <iostream>
#include <map>
#include <mutex>
#include <numeric>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "data/image_decode.h"
#include "data/image_transforms.h"

namespace tspipe {
namespace {

// Image `*index` of `folder`, or with `skip` the first after it
// (cyclically) that decodes, whose index is left in `*index` (its label is
// the sample's); each bad file is reported once, through `bad`.
RgbImage DecodeOrNext(const ImageFolder& folder, int64_t* index, bool skip, std::mutex& mutex,
                      std::set<std::string>& bad) {
  const int64_t n = static_cast<int64_t>(folder.samples.size());
  for (int64_t tries = 0; tries < n; ++tries) {
    const std::string& path = folder.samples[*index].path;
    try {
      return DecodeImageFile(path);
    } catch (const std::exception& e) {
      if (!skip) {
        throw std::runtime_error(std::string(e.what()) +
                                 " (--skip_bad_images replaces bad images by the next one)");
      }
      std::lock_guard<std::mutex> lock(mutex);
      if (bad.insert(path).second) std::cerr << "tspipe: skipping bad image " << e.what() << "\n";
    }
    *index = (*index + 1) % n;
  }
  throw std::runtime_error(folder.root + ": no image decodes");
}

// Keeps `limit` samples spread evenly over the folder's order (0 or more
// than there are: all): a class-sorted folder's first N would be a few
// classes only.
void KeepSpread(ImageFolder& folder, int64_t limit) {
  const int64_t n = static_cast<int64_t>(folder.samples.size());
  if (limit <= 0 || limit >= n) return;
  std::vector<ImageFolderSample> kept;
  kept.reserve(limit);
  for (int64_t i = 0; i < limit; ++i) kept.push_back(folder.samples[i * n / limit]);
  folder.samples = std::move(kept);
}

// Throws std::invalid_argument unless `folder` has exactly `expected`'s
// classes (when given): labels are class indices, so a missing class folder
// would shift every later label.
void CheckClasses(const ImageFolder& folder, const std::vector<std::string>& expected) {
  if (expected.empty() || folder.classes == expected) return;
  for (size_t i = 0; i < std::max(expected.size(), folder.classes.size()); ++i) {
    const std::string want = i < expected.size() ? expected[i] : "(none)";
    const std::string got = i < folder.classes.size() ? folder.classes[i] : "(none)";
    if (want != got) {
      throw std::invalid_argument(folder.root + " has class " + got + " where the training folder "
                                  "has " + want + " (class " + std::to_string(i) +
                                  "): both need the same class folders");
    }
  }
}

// The folder as `o` asks for it, for training and evaluation alike: scanned,
// its classes and channels checked against the shape (and against
// o.classes), limited to o.limit images spread over its order; skipped
// non-image files reported once.
ImageFolder OpenFolder(const ImageFolderOptions& o) {
  ImageFolder folder = ScanImageFolder(o.root, o.skip_bad_images);
  if (static_cast<int>(folder.classes.size()) > o.shape.num_classes) {
    throw std::invalid_argument(o.root + " has " + std::to_string(folder.classes.size()) +
                                " class folders; num_classes=" +
                                std::to_string(o.shape.num_classes) + " cannot hold them");
  }
  if (o.shape.channels != 1 && o.shape.channels != 3) {
    throw std::invalid_argument("image folders give 3-channel (or grey 1-channel) images; "
                                "channels=" + std::to_string(o.shape.channels));
  }
  CheckClasses(folder, o.classes);
  KeepSpread(folder, o.limit);
  if (!folder.skipped.empty()) {
    std::cerr << "tspipe: skipped " << folder.skipped.size() << " non-image file(s) in " << o.root
              << ", first " << folder.skipped.front() << "\n";
  }
  return folder;
}

}  // namespace

class ImageFolderSource::Impl {
 public:
  explicit Impl(const ImageFolderOptions& o)
      : options_(o), folder_(OpenFolder(o)) {
    if (o.batch_size < 1) throw std::invalid_argument("batch_size must be at least 1");
    if (o.threads < 0) throw std::invalid_argument("data_threads must not be negative");
    n_ = static_cast<int64_t>(folder_.samples.size());
    per_epoch_ = n_ / o.batch_size;
    if (per_epoch_ == 0) {
      throw std::invalid_argument(o.root + " has " + std::to_string(n_) +
                                  " images, fewer than one batch of " +
                                  std::to_string(o.batch_size));
    }
    prefetch_ = o.prefetch > 0 ? o.prefetch : 2 * std::max(1, o.threads);
    Start();
  }

  ~Impl() { Stop(); }

  Batch Next() {
    if (options_.threads == 0) {
      const auto start = std::chrono::steady_clock::now();
      Batch b = Build(consumed_++);
      Count(start);
      return b;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    const auto start = std::chrono::steady_clock::now();
    ready_cv_.wait(lock, [this] { return ready_.count(consumed_) > 0; });
    Slot slot = std::move(ready_[consumed_]);
    ready_.erase(consumed_);
    ++consumed_;
    lock.unlock();
    space_cv_.notify_all();
    Count(start);
    if (!slot.error.empty()) throw std::runtime_error(slot.error);
    return std::move(slot.batch);
  }

  bool Seek(int64_t batches) {
    Stop();
    ready_.clear();
    consumed_ = assigned_ = batches;
    Start();
    return true;
  }

  int64_t size() const { return n_; }
  const ImageFolder& folder() const { return folder_; }
  LoaderStats stats() const {
    std::lock_guard<std::mutex> lock(stats_mutex_);
    LoaderStats s = stats_;
    s.bad_images = static_cast<int64_t>(bad_.size());
    return s;
  }

 private:
  struct Slot {
    Batch batch;
    std::string error;
  };

  void Count(std::chrono::steady_clock::time_point start) {
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::lock_guard<std::mutex> lock(stats_mutex_);
    ++stats_.batches;
    stats_.wait_seconds += waited;
    stats_.last_wait_seconds = waited;
  }

  void Start() {
    stop_ = false;
    for (int t = 0; t < options_.threads; ++t) workers_.emplace_back([this] { Work(); });
  }

  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    space_cv_.notify_all();
    for (std::thread& t : workers_) t.join();
    workers_.clear();
  }

  void Work() {
    for (;;) {
      int64_t k;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        space_cv_.wait(lock, [this] { return stop_ || assigned_ < consumed_ + prefetch_; });
        if (stop_) return;
        k = assigned_++;
      }
      Slot slot;
      try {
        slot.batch = Build(k);
      } catch (const std::exception& e) {
        slot.error = e.what();
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        ready_[k] = std::move(slot);
      }
      ready_cv_.notify_all();
    }
  }

  // The visiting order of epoch `epoch`.
  std::shared_ptr<const std::vector<int64_t>> Order(int64_t epoch) {
    std::lock_guard<std::mutex> lock(order_mutex_);
    auto it = orders_.find(epoch);
    if (it != orders_.end()) return it->second;
    auto order = std::make_shared<std::vector<int64_t>>(n_);
    std::iota(order->begin(), order->end(), 0);
    if (options_.shuffle) {
      std::mt19937_64 rng = ImageGenerator(options_.seed, epoch, ~0ull, ~0ull);
      std::shuffle(order->begin(), order->end(), rng);
    }
    if (orders_.size() > 4) orders_.erase(orders_.begin());
    orders_[epoch] = order;
    return order;
  }

  RgbImage Decode(int64_t* index) {
    return DecodeOrNext(folder_, index, options_.skip_bad_images, stats_mutex_, bad_);
  }

  Batch Build(int64_t k) {
    const int64_t epoch = k / per_epoch_, first = (k % per_epoch_) * options_.batch_size;
    const auto order = Order(epoch);
    const int b = options_.batch_size, c = options_.shape.channels, s = options_.shape.image_size;
    const int views = std::max(1, options_.views);
    std::vector<torch::Tensor> images;
    for (int v = 0; v < views; ++v) images.push_back(torch::empty({b, c, s, s}));
    torch::Tensor labels = torch::empty({b}, torch::kInt64);
    int64_t* label = labels.data_ptr<int64_t>();
    const size_t pixels = static_cast<size_t>(c) * s * s;
    for (int i = 0; i < b; ++i) {
      const int64_t position = first + i;
      int64_t index = (*order)[position];
      const RgbImage image = Decode(&index);
      label[i] = folder_.samples[index].label;
      for (int v = 0; v < views; ++v) {
        ImagePipeline pipeline = options_.plain_resize && options_.views == 0
                                     ? ImagePipeline::kResize
                                 : !options_.augment   ? ImagePipeline::kEval
                                 : options_.views == 0 ? ImagePipeline::kTrain
                                 : v % 2 == 0          ? ImagePipeline::kByolView1
                                                       : ImagePipeline::kByolView2;
        std::mt19937_64 rng = ImageGenerator(options_.seed, epoch, position, v);
        const FloatImage out = ApplyPipeline(image, pipeline, s, c, rng);
        std::memcpy(images[v].data_ptr<float>() + i * pixels, out.data.data(), pixels * sizeof(float));
      }
    }
    return Batch{images, {labels}};
  }

  const ImageFolderOptions options_;
  ImageFolder folder_;
  int64_t n_ = 0, per_epoch_ = 0;
  int prefetch_ = 0;

  std::mutex mutex_;  // Guards the queue below.
  std::condition_variable ready_cv_, space_cv_;
  std::map<int64_t, Slot> ready_;
  int64_t consumed_ = 0, assigned_ = 0;
  bool stop_ = false;
  std::vector<std::thread> workers_;

  std::mutex order_mutex_;
  std::map<int64_t, std::shared_ptr<const std::vector<int64_t>>> orders_;

  mutable std::mutex stats_mutex_;
  LoaderStats stats_;
  std::set<std::string> bad_;
};

EvalImages LoadImageFolderForEval(const ImageFolderOptions& o) {
  const ImageFolder folder = OpenFolder(o);
  const int64_t n = static_cast<int64_t>(folder.samples.size());
  const int c = o.shape.channels, s = o.shape.image_size;
  const size_t pixels = static_cast<size_t>(c) * s * s;
  EvalImages out{torch::empty({n, c, s, s}), torch::empty({n}, torch::kInt64)};
  float* images = out.images.data_ptr<float>();
  int64_t* labels = out.labels.data_ptr<int64_t>();
  std::mutex mutex;
  std::set<std::string> bad;
  std::atomic<int64_t> next{0};
  std::string error;
  auto work = [&] {
    for (int64_t i = next++; i < n; i = next++) {
      try {
        std::mt19937_64 unused(0);  // The evaluation pipeline draws nothing.
        int64_t decoded = i;
        const RgbImage image = DecodeOrNext(folder, &decoded, o.skip_bad_images, mutex, bad);
        const FloatImage im = ApplyPipeline(image,
                                            o.plain_resize ? ImagePipeline::kResize
                                                           : ImagePipeline::kEval,
                                            s, c, unused);
        std::memcpy(images + i * pixels, im.data.data(), pixels * sizeof(float));
        labels[i] = folder.samples[decoded].label;
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mutex);
        if (error.empty()) error = e.what();
        next = n;
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 1; t < o.threads; ++t) threads.emplace_back(work);
  work();
  for (std::thread& t : threads) t.join();
  if (!error.empty()) throw std::runtime_error(error);
  return out;
}

ImageFolderSource::ImageFolderSource(const ImageFolderOptions& options)
    : impl_(std::make_unique<Impl>(options)) {}
ImageFolderSource::~ImageFolderSource() = default;
Batch ImageFolderSource::Next() { return impl_->Next(); }
int64_t ImageFolderSource::size() const { return impl_->size(); }
bool ImageFolderSource::Seek(int64_t batches) { return impl_->Seek(batches); }
const ImageFolder& ImageFolderSource::folder() const { return impl_->folder(); }
LoaderStats ImageFolderSource::stats() const { return impl_->stats(); }

}  // namespace tspipe
