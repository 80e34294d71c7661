// The trainer's data: batches drawn from a recipe's source one ahead of
// training (the executor runs the next batch's teacher forwards before the
// current step ends, TSPipe's look-ahead), converted to the run's dtype, and
// the position a checkpoint records to continue with the same batches.
#ifndef TSPIPE_ENGINE_BATCH_STREAM_H_
#define TSPIPE_ENGINE_BATCH_STREAM_H_

#include <torch/torch.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/microbatch.h"
#include "engine/recipe.h"

namespace tspipe {

class BatchStream {
 public:
  // Floating tensors of every batch become `dtype`.
  BatchStream(std::unique_ptr<BatchSource> source, torch::Dtype dtype);

  // The next batch, drawn if not yet: what the step after the current one
  // trains on (its teacher forwards may run ahead).
  const Batch& Peek();
  // Removes and returns the next batch.
  Batch Pop();

  // Batches drawn from the source so far, and how many of them are held
  // (drawn, not yet trained on): a checkpoint's data position.
  int64_t drawn() const { return drawn_; }
  int64_t held() const { return static_cast<int64_t>(ahead_.size()); }
  // Continues a fresh stream where one at (`drawn`, `held`) was: seeks the
  // source there when it can (BatchSource::Seek), else draws and drops what
  // it had trained on, so the source's own generators end in the same
  // state; then holds its last `held` draws. Throws
  // std::invalid_argument naming `what` when this stream has drawn more
  // already.
  void FastForward(int64_t drawn, int64_t held, const std::string& what);
  // Training examples behind the source (0 for synthetic data).
  int64_t size() const { return source_->size(); }

  // Seconds spent waiting for the source (its Next()) so far, and with
  // record_waits on, each wait's start and end in microseconds of the
  // steady clock (the trace's clock).
  double wait_seconds() const { return wait_seconds_; }
  void set_record_waits(bool on) { record_waits_ = on; }
  std::vector<std::pair<double, double>> TakeWaits() { return std::move(waits_); }

 private:
  Batch Converted(Batch b) const;
  Batch Draw();

  std::unique_ptr<BatchSource> source_;
  torch::Dtype dtype_;
  std::deque<Batch> ahead_;
  int64_t drawn_ = 0;
  double wait_seconds_ = 0;
  bool record_waits_ = false;
  std::vector<std::pair<double, double>> waits_;
};

}  // namespace tspipe

#endif  // TSPIPE_ENGINE_BATCH_STREAM_H_
