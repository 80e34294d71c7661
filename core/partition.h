// Partitions: a model is a sequence of blocks; a balance (blocks per stage)
// cuts it into stages. Blocks pass several tensors (an Activation) so that,
// for example, hidden states travel with their attention mask.
#ifndef TSPIPE_CORE_PARTITION_H_
#define TSPIPE_CORE_PARTITION_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "core/balance.h"  // CheckBalance, EvenBalance.

namespace tspipe {

// The tensors flowing between stages. Floating-point tensors carry
// gradients; others (masks, indices) pass through without.
using Activation = std::vector<torch::Tensor>;

// The unit a balance counts.
class BlockImpl : public torch::nn::Module {
 public:
  virtual Activation Forward(const Activation& input) = 0;
  // A deep copy with its own parameters and buffers (equal values), for
  // data-parallel replicas. Block types opt in; the default throws
  // std::logic_error naming the block.
  virtual std::shared_ptr<BlockImpl> Replicate() const;
};
using Block = std::shared_ptr<BlockImpl>;
using BlockList = std::vector<Block>;

// Adapts any one-tensor module (anything torch::nn::Sequential accepts) to a
// Block: it transforms input[0]; further tensors pass through unchanged.
class TensorBlockImpl : public BlockImpl {
 public:
  explicit TensorBlockImpl(torch::nn::AnyModule module);
  Activation Forward(const Activation& input) override;
  // Needs the wrapped module to be a torch::nn::Cloneable (all built-in
  // modules are).
  std::shared_ptr<BlockImpl> Replicate() const override;

 private:
  torch::nn::AnyModule module_;
};

// Applies one one-tensor module to every tensor of the activation: several
// views of the same samples (BYOL, MoCo) pass through the same weights, each
// view with its own batch-norm statistics, as separate forward passes would.
class MultiViewBlockImpl : public BlockImpl {
 public:
  explicit MultiViewBlockImpl(torch::nn::AnyModule module);
  Activation Forward(const Activation& input) override;
  std::shared_ptr<BlockImpl> Replicate() const override;

 private:
  torch::nn::AnyModule module_;
};

// A teacher made of stale copies of other models (codistillation): one copy
// of the same block per peer. The first block of a model (`shared_input`)
// feeds the stage input to every copy; later ones split their input into
// one equal group of tensors per copy. The output is the copies' outputs
// concatenated in copy order, so the loss sees every peer's prediction.
class PeerCopiesBlockImpl : public BlockImpl {
 public:
  PeerCopiesBlockImpl(BlockList copies, bool shared_input);
  Activation Forward(const Activation& input) override;
  std::shared_ptr<BlockImpl> Replicate() const override;
  const BlockList& copies() const { return copies_; }

 private:
  BlockList copies_;
  bool shared_input_;
};

// Puts the global CPU random generator back, when it goes out of scope, to
// the state it had when it was made: for building things (replicas, momentum
// targets) whose initial values are overwritten, so that a seeded run draws
// the same numbers afterwards whether or not they were built.
class RestoreGeneratorOnExit {
 public:
  RestoreGeneratorOnExit();
  ~RestoreGeneratorOnExit();
  RestoreGeneratorOnExit(const RestoreGeneratorOnExit&) = delete;
  RestoreGeneratorOnExit& operator=(const RestoreGeneratorOnExit&) = delete;

 private:
  torch::Tensor state_;
};

// Deep copies of `blocks` (BlockImpl::Replicate), leaving the global random
// generator as it found it.
BlockList ReplicateBlocks(const BlockList& blocks);

// The teachers of models that teach each other: teachers[g] has, for each
// block of the architecture, a PeerCopiesBlock holding deep copies of that
// block of every other model in model order (so they start equal to the
// peers). `students[g]` is model g's block list; all have the same
// architecture. Leaves the global random generator as it found it.
std::vector<BlockList> MakePeerTeachers(const std::vector<BlockList>& students);

// One block per child of `sequential`, sharing the child modules.
BlockList BlocksFromSequential(const torch::nn::Sequential& sequential);
// The same with MultiViewBlocks.
BlockList MultiViewBlocksFromSequential(const torch::nn::Sequential& sequential);

// A contiguous run of blocks: what one stage holds. Its parameters() are the
// blocks' parameters, so an optimizer per stage covers exactly that stage.
class StageImpl : public torch::nn::Module {
 public:
  StageImpl(BlockList blocks, int first_block);
  Activation Forward(const Activation& input);
  // Deep copy of every block (see BlockImpl::Replicate), on the same device.
  // Leaves the global random generator as it found it, so making replicas
  // does not change what a seeded run draws afterwards.
  std::shared_ptr<StageImpl> Replicate() const;
  int first_block() const { return first_block_; }
  int num_blocks() const { return static_cast<int>(blocks_.size()); }
  const BlockList& blocks() const { return blocks_; }

 private:
  BlockList blocks_;
  int first_block_;
};
using Stage = std::shared_ptr<StageImpl>;

// Parameters then buffers of every block of `stage`, block by block: what
// models exchange so that peers can refresh their copies.
std::vector<torch::Tensor> StageState(StageImpl& stage);
// Copies peers[k] (StageState of peer k's stage) into copy k of every
// PeerCopiesBlock of `teacher`. Throws std::invalid_argument when a block is
// not one or the shapes differ.
void LoadPeerCopies(StageImpl& teacher, const std::vector<std::vector<torch::Tensor>>& peers);

// Cuts `blocks` by `balance`. The stages share the block modules (no copy).
std::vector<Stage> Partition(const BlockList& blocks, const std::vector<int>& balance);

// Copies every parameter and buffer of `from` into `to` (same structure).
void CopyState(torch::nn::Module& from, torch::nn::Module& to);

}  // namespace tspipe

#endif  // TSPIPE_CORE_PARTITION_H_
