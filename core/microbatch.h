// Mini-batches and their split into micro-batches along dimension 0.
#ifndef TSPIPE_CORE_MICROBATCH_H_
#define TSPIPE_CORE_MICROBATCH_H_

#include <torch/torch.h>

#include <vector>

#include "core/partition.h"

namespace tspipe {

// A mini-batch: `inputs` feed stage 0 (several views or tensors allowed),
// `targets` reach only the loss (labels, masks). Every tensor's dimension 0
// is the sample dimension and all have the same size there.
struct Batch {
  Activation inputs;
  Activation targets;

  // Samples in the batch; throws std::invalid_argument if the tensors
  // disagree on dimension 0 or there are none.
  int64_t size() const;
};

// Splits into `num_microbatches` equal chunks. Throws std::invalid_argument
// naming both numbers when the count is < 1 or does not divide the size.
std::vector<Batch> SplitBatch(const Batch& batch, int num_microbatches);

// Concatenates per-micro-batch activations position by position.
Activation Concat(const std::vector<Activation>& parts);

// Inverse of SplitBatch.
Batch GatherBatch(const std::vector<Batch>& parts);

// Moves every tensor to `device` (undefined tensors stay undefined).
Activation ToDevice(const Activation& activation, const torch::Device& device,
                    bool non_blocking = false);

}  // namespace tspipe

#endif  // TSPIPE_CORE_MICROBATCH_H_
