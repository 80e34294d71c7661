// Times a block sequence on a sample input, block by block, as torchgpipe's
// balance_by_time does: the caller supplies the blocks and the sample, the
// profiler knows no model.
#ifndef TSPIPE_ENGINE_PROFILE_H_
#define TSPIPE_ENGINE_PROFILE_H_

#include <torch/torch.h>

#include <vector>

#include "core/partition.h"

namespace tspipe {

struct BlockTimes {
  std::vector<double> forward;   // ms per call, one per block.
  std::vector<double> backward;  // Empty unless asked for.
};

// Moves `blocks` to `device` and times each on the output of the one before
// (block 0 on `sample`): the median of 5 runs after 2 warm-up runs, the
// device synchronised around each. With `with_backward` the blocks run in
// train mode and the backward is timed too (forward + backward, minus the
// forward); without, forward only under no_grad, in train mode when
// `train_mode` (momentum targets) and eval mode otherwise. Changes
// batch-norm running statistics: profile throw-away copies.
BlockTimes ProfileBlocks(const BlockList& blocks, const Activation& sample,
                         const torch::Device& device, bool with_backward, bool train_mode);

}  // namespace tspipe

#endif  // TSPIPE_ENGINE_PROFILE_H_
