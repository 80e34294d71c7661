// Gradients that need more than one stage's view before the optimizer
// steps, run by the TG and GN actions that AddGradientSync (core/lowering.h)
// puts after each rank's last backward:
// - tied parameters (TG): one parameter of the model's math that two stages
//   hold a copy of (BERT's decoder and word embeddings, on the first and
//   last stage). Both copies get the sum of their gradients, so they take
//   the same optimizer step and stay equal, as Megatron keeps its
//   embeddings;
// - clipping by the global gradient norm (GN; torch.nn.utils.clip_grad_norm_):
//   the 2-norm over every stage of a model, tied copies counted once.
// Across ranks both are all-reduces over the Transport. Where they run, and
// that waiting there cannot deadlock, is the schedule's business: the
// validator and the simulator check them like any other action.
#ifndef TSPIPE_BACKENDS_GRAD_SYNC_H_
#define TSPIPE_BACKENDS_GRAD_SYNC_H_

#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <map>
#include <utility>
#include <vector>

#include "backends/transport.h"
#include "core/message.h"
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

// The stage pairs (a <= b, each once, ascending) of `ties`: what
// Workload::tied_stages says of them.
std::vector<std::pair<int, int>> TiedStages(const std::vector<TiedGradient>& ties);

class GradientSync {
 public:
  // `clip_norm` > 0 turns clipping on. Throws std::invalid_argument naming
  // the problem: a tie outside the schedule's stages, a clipping norm that
  // is not a finite number >= 0, or a schedule built for other ties or
  // without clipping (its Workload::tied_stages and clip_gradients, and so
  // its TG and GN actions, must be these).
  GradientSync(const Schedule& schedule, std::vector<TiedGradient> ties, double clip_norm);

  // Checks that each tie's copies exist and have one shape.
  void CheckStages(const std::vector<Stage>& student) const;

  // TG: sums the gradients of the ties between `rank`'s stages (stage ->
  // module, final gradients) and `peer`'s (kNoPeer: both copies here).
  // Throws like Transport::AllReduce.
  void SumTied(int rank, int peer, const std::map<int, StageImpl*>& stages,
               const CollectiveId& id, Transport& transport, std::chrono::milliseconds timeout,
               const std::atomic<bool>& abort) const;
  // GN: scales every gradient of the rank's stages (all of one replica) by
  // the clipping factor of the replica's global norm.
  void Clip(int rank, const std::map<int, StageImpl*>& stages, const CollectiveId& id,
            Transport& transport, std::chrono::milliseconds timeout,
            const std::atomic<bool>& abort) const;

 private:
  Schedule schedule_;  // Placement and workload only (no actions).
  std::vector<TiedGradient> ties_;
  double clip_norm_;
};

}  // namespace tspipe

#endif  // TSPIPE_BACKENDS_GRAD_SYNC_H_
