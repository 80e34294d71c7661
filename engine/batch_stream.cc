#include "engine/batch_stream.h"

#include <chrono>

#include <stdexcept>
#include <utility>

namespace tspipe {

BatchStream::BatchStream(std::unique_ptr<BatchSource> source, torch::Dtype dtype)
    : source_(std::move(source)), dtype_(dtype) {}

Batch BatchStream::Draw() {
  const auto start = std::chrono::steady_clock::now();
  Batch b = source_->Next();
  const auto end = std::chrono::steady_clock::now();
  wait_seconds_ += std::chrono::duration<double>(end - start).count();
  if (record_waits_) {
    auto us = [](std::chrono::steady_clock::time_point t) {
      return std::chrono::duration<double, std::micro>(t.time_since_epoch()).count();
    };
    waits_.emplace_back(us(start), us(end));
  }
  return b;
}

const Batch& BatchStream::Peek() {
  if (ahead_.empty()) {
    ahead_.push_back(Converted(Draw()));
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
  // Sources that can seek skip to the first batch to keep; what this
  // stream drew already (the trainer peeks at its first batch on
  // construction) is dropped, since a seekable source's batches depend on
  // their position only.
  if (drawn_ <= drawn - held && source_->Seek(drawn - held)) {
    ahead_.clear();
    drawn_ = drawn - held;
  }
  while (drawn_ < drawn) {
    Batch b = Draw();
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
