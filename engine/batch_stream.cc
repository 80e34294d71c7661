#include "engine/batch_stream.h"

#include <stdexcept>
#include <utility>

namespace tspipe {

BatchStream::BatchStream(std::unique_ptr<BatchSource> source, torch::Dtype dtype)
    : source_(std::move(source)), dtype_(dtype) {}

const Batch& BatchStream::Peek() {
  if (ahead_.empty()) {
    ahead_.push_back(Converted(source_->Next()));
    ++drawn_;
  }
  return ahead_.front();
}

Batch BatchStream::Pop() {
  Peek();
  Batch b = std::move(ahead_.front());
  ahead_.pop_front();
  return b;
}

void BatchStream::FastForward(int64_t drawn, int64_t held, const std::string& what) {
  std::deque<Batch> kept;
  while (drawn_ < drawn) {
    Batch b = source_->Next();
    ++drawn_;
    if (drawn - drawn_ < held) kept.push_back(Converted(std::move(b)));
  }
  if (drawn_ != drawn) {
    throw std::invalid_argument(what + " was written after " + std::to_string(drawn) +
                                " batches, fewer than this trainer has drawn already (" +
                                std::to_string(drawn_) + "); resume a fresh trainer");
  }
  ahead_ = std::move(kept);
}

Batch BatchStream::Converted(Batch b) const {
  if (dtype_ == torch::kFloat32) return b;
  for (Activation* part : {&b.inputs, &b.targets}) {
    for (torch::Tensor& t : *part) {
      if (t.defined() && t.is_floating_point()) t = t.to(dtype_);
    }
  }
  return b;
}

}  // namespace tspipe
