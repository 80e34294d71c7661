// Gradients that need more than one stage's view before the optimizer
// steps, finished once per step on every rank at one point of its action
// list (after its last backward):
// - tied parameters: one parameter of the model's math that two stages hold
//   a copy of (BERT's decoder and word embeddings, on the first and last
//   stage). Both copies get the sum of their gradients, so they take the
//   same optimizer step and stay equal, as Megatron keeps its embeddings;
// - clipping by the global gradient norm (torch.nn.utils.clip_grad_norm_):
//   the 2-norm over every stage of a model, tied copies counted once.
// Across ranks both are all-reduces over the Transport; the constructor
// refuses a schedule in which waiting at those points could deadlock.
#ifndef TSPIPE_BACKENDS_GRAD_SYNC_H_
#define TSPIPE_BACKENDS_GRAD_SYNC_H_

#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <vector>

#include "backends/transport.h"
#include "core/partition.h"
#include "core/schedule.h"

namespace tspipe {

// Two copies of one parameter: indices into their stages' parameters().
// The first copy is the one the norm counts.
struct TiedGradient {
  int first_stage = 0;
  int first_index = 0;
  int second_stage = 0;
  int second_index = 0;
};

class GradientSync {
 public:
  // `clip_norm` > 0 turns clipping on. Throws std::invalid_argument naming
  // the problem: a tie outside the schedule's stages, stages of a tie with
  // different replica counts, a rank whose stages belong to different
  // replicas or that steps one stage before another's backward, or a
  // schedule that would deadlock waiting at the sync points.
  GradientSync(const Schedule& schedule, std::vector<TiedGradient> ties, double clip_norm);

  bool active() const { return !ties_.empty() || clip_norm_ > 0; }
  // Index into schedule.ranks[rank] before which Finish runs (its size:
  // after the last action); -1 when the rank has nothing to do.
  int point(int rank) const { return points_.at(rank); }
  // Checks that each tie's copies exist and have one shape.
  void CheckStages(const std::vector<Stage>& student) const;

  // Sums the tied gradients and scales every gradient of the rank's
  // `stages` (stage -> module, all of one replica) by the clipping factor.
  // `batch` (the absolute mini-batch) identifies the collectives. Throws
  // like Transport::AllReduce.
  void Finish(int rank, int64_t batch, const std::map<int, StageImpl*>& stages,
              Transport& transport, std::chrono::milliseconds timeout,
              const std::atomic<bool>& abort) const;

 private:
  // Collective ids below the loss all-reduce's -1 (see c10d_transport).
  int CollectiveId(int index, int replica) const;

  std::vector<std::vector<int>> placement_;
  std::vector<TiedGradient> ties_;
  double clip_norm_;
  std::vector<int> points_;
  // The replica index of each rank's stages (-1: none).
  std::vector<int> replica_;
  int max_replicas_ = 1;
};

}  // namespace tspipe

#endif  // TSPIPE_BACKENDS_GRAD_SYNC_H_
