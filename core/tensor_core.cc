// Partitions, micro-batches and the algorithm base: the core code that needs
// LibTorch, kept in one translation unit (each <torch/torch.h> TU costs
// ~15 s on 2 cores).
#include <ATen/CPUGeneratorImpl.h>

#include <mutex>
#include <stdexcept>
#include <string>

#include "core/algorithm.h"
#include "core/microbatch.h"
#include "core/partition.h"

namespace tspipe {

TensorBlockImpl::TensorBlockImpl(torch::nn::AnyModule module) : module_(std::move(module)) {
  register_module("module", module_.ptr());
}

Activation TensorBlockImpl::Forward(const Activation& input) {
  TORCH_CHECK(!input.empty(), "block received an empty activation");
  Activation out = input;
  out[0] = module_.forward(input[0]);
  return out;
}

std::shared_ptr<BlockImpl> BlockImpl::Replicate() const {
  throw std::logic_error("block " + name() +
                         " cannot be replicated; override BlockImpl::Replicate to use it "
                         "with data parallelism");
}

std::shared_ptr<BlockImpl> TensorBlockImpl::Replicate() const {
  try {
    return std::make_shared<TensorBlockImpl>(module_.clone());
  } catch (const c10::Error& e) {
    throw std::logic_error("block " + module_.ptr()->name() +
                           " cannot be replicated (make it a torch::nn::Cloneable): " +
                           e.what_without_backtrace());
  }
}

MultiViewBlockImpl::MultiViewBlockImpl(torch::nn::AnyModule module) : module_(std::move(module)) {
  register_module("module", module_.ptr());
}

Activation MultiViewBlockImpl::Forward(const Activation& input) {
  TORCH_CHECK(!input.empty(), "block received an empty activation");
  Activation out;
  out.reserve(input.size());
  for (const torch::Tensor& view : input) out.push_back(module_.forward(view));
  return out;
}

std::shared_ptr<BlockImpl> MultiViewBlockImpl::Replicate() const {
  try {
    return std::make_shared<MultiViewBlockImpl>(module_.clone());
  } catch (const c10::Error& e) {
    throw std::logic_error("block " + module_.ptr()->name() +
                           " cannot be replicated (make it a torch::nn::Cloneable): " +
                           e.what_without_backtrace());
  }
}

PeerCopiesBlockImpl::PeerCopiesBlockImpl(BlockList copies, bool shared_input)
    : copies_(std::move(copies)), shared_input_(shared_input) {
  for (size_t k = 0; k < copies_.size(); ++k) register_module("peer" + std::to_string(k), copies_[k]);
}

Activation PeerCopiesBlockImpl::Forward(const Activation& input) {
  const size_t n = copies_.size();
  TORCH_CHECK(shared_input_ || (n > 0 && input.size() % n == 0), "peer copies block: ",
              input.size(), " input tensors do not split into ", n, " copies");
  const size_t width = shared_input_ ? input.size() : input.size() / n;
  Activation out;
  for (size_t k = 0; k < n; ++k) {
    Activation part = shared_input_ ? input
                                    : Activation(input.begin() + k * width,
                                                 input.begin() + (k + 1) * width);
    for (torch::Tensor& t : copies_[k]->Forward(part)) out.push_back(std::move(t));
  }
  return out;
}

std::shared_ptr<BlockImpl> PeerCopiesBlockImpl::Replicate() const {
  BlockList copies;
  for (const Block& b : copies_) copies.push_back(b->Replicate());
  return std::make_shared<PeerCopiesBlockImpl>(std::move(copies), shared_input_);
}

namespace {

std::vector<torch::Tensor> ModuleState(torch::nn::Module& m) {
  std::vector<torch::Tensor> out = m.parameters();
  for (const torch::Tensor& b : m.buffers()) out.push_back(b);
  return out;
}

}  // namespace

std::vector<torch::Tensor> StageState(StageImpl& stage) {
  std::vector<torch::Tensor> out;
  for (const Block& b : stage.blocks()) {
    for (const torch::Tensor& t : ModuleState(*b)) out.push_back(t);
  }
  return out;
}

void LoadPeerCopies(StageImpl& teacher, const std::vector<std::vector<torch::Tensor>>& peers) {
  torch::NoGradGuard no_grad;
  std::vector<size_t> offset(peers.size(), 0);
  for (const Block& b : teacher.blocks()) {
    auto* block = dynamic_cast<PeerCopiesBlockImpl*>(b.get());
    if (block == nullptr || block->copies().size() != peers.size()) {
      throw std::invalid_argument("stage " + std::to_string(teacher.first_block()) +
                                  " of the teacher is not made of copies of " +
                                  std::to_string(peers.size()) + " peers");
    }
    for (size_t k = 0; k < peers.size(); ++k) {
      for (torch::Tensor& t : ModuleState(*block->copies()[k])) {
        if (offset[k] >= peers[k].size() || !peers[k][offset[k]].sizes().equals(t.sizes())) {
          throw std::invalid_argument("peer " + std::to_string(k) +
                                      "'s state does not fit its copy in the teacher");
        }
        t.copy_(peers[k][offset[k]++]);
      }
    }
  }
  for (size_t k = 0; k < peers.size(); ++k) {
    if (offset[k] != peers[k].size()) {
      throw std::invalid_argument("peer " + std::to_string(k) + " sent more state than its copy holds");
    }
  }
}

BlockList MultiViewBlocksFromSequential(const torch::nn::Sequential& sequential) {
  BlockList blocks;
  for (const auto& child : *sequential) {
    blocks.push_back(std::make_shared<MultiViewBlockImpl>(child));
  }
  return blocks;
}

BlockList BlocksFromSequential(const torch::nn::Sequential& sequential) {
  BlockList blocks;
  for (const auto& child : *sequential) {
    blocks.push_back(std::make_shared<TensorBlockImpl>(child));
  }
  return blocks;
}

StageImpl::StageImpl(BlockList blocks, int first_block)
    : blocks_(std::move(blocks)), first_block_(first_block) {
  for (size_t i = 0; i < blocks_.size(); ++i) {
    register_module("block" + std::to_string(first_block_ + i), blocks_[i]);
  }
}

Activation StageImpl::Forward(const Activation& input) {
  Activation x = input;
  for (auto& block : blocks_) x = block->Forward(x);
  return x;
}

RestoreGeneratorOnExit::RestoreGeneratorOnExit() {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  state_ = gen.get_state();
}

RestoreGeneratorOnExit::~RestoreGeneratorOnExit() {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state_);
}

BlockList ReplicateBlocks(const BlockList& blocks) {
  // Cloneable::clone re-runs reset(), which draws fresh initial values
  // before copying ours over them.
  RestoreGeneratorOnExit restore;
  BlockList copies;
  for (const Block& b : blocks) copies.push_back(b->Replicate());
  return copies;
}

std::shared_ptr<StageImpl> StageImpl::Replicate() const {
  return std::make_shared<StageImpl>(ReplicateBlocks(blocks_), first_block_);
}

std::vector<BlockList> MakePeerTeachers(const std::vector<BlockList>& students) {
  const size_t n = students.size();
  std::vector<BlockList> teachers(n);
  for (size_t g = 0; g < n; ++g) {
    for (size_t b = 0; b < students[g].size(); ++b) {
      BlockList peers;
      for (size_t j = 0; j < n; ++j) {
        if (j != g) peers.push_back(ReplicateBlocks({students[j].at(b)})[0]);
      }
      teachers[g].push_back(std::make_shared<PeerCopiesBlockImpl>(std::move(peers), b == 0));
    }
  }
  return teachers;
}

std::vector<Stage> Partition(const BlockList& blocks, const std::vector<int>& balance) {
  CheckBalance(balance, static_cast<int>(blocks.size()));
  std::vector<Stage> stages;
  int next = 0;
  for (int count : balance) {
    BlockList part(blocks.begin() + next, blocks.begin() + next + count);
    stages.push_back(std::make_shared<StageImpl>(std::move(part), next));
    next += count;
  }
  return stages;
}

void CopyState(torch::nn::Module& from, torch::nn::Module& to) {
  torch::NoGradGuard no_grad;
  auto src_params = from.named_parameters();
  auto dst_params = to.named_parameters();
  TORCH_CHECK(src_params.size() == dst_params.size(), "CopyState: parameter count differs");
  for (const auto& p : src_params) dst_params[p.key()].copy_(p.value());
  auto src_buffers = from.named_buffers();
  auto dst_buffers = to.named_buffers();
  TORCH_CHECK(src_buffers.size() == dst_buffers.size(), "CopyState: buffer count differs");
  for (const auto& b : src_buffers) dst_buffers[b.key()].copy_(b.value());
}

int64_t Batch::size() const {
  int64_t n = -1;
  for (const Activation* part : {&inputs, &targets}) {
    for (const torch::Tensor& t : *part) {
      if (!t.defined()) continue;
      if (t.dim() == 0) throw std::invalid_argument("batch tensor has no sample dimension");
      if (n >= 0 && t.size(0) != n) {
        throw std::invalid_argument("batch tensors disagree on the sample count: " +
                                    std::to_string(n) + " vs " + std::to_string(t.size(0)));
      }
      n = t.size(0);
    }
  }
  if (n < 0) throw std::invalid_argument("batch has no tensors");
  return n;
}

namespace {

std::vector<Activation> SplitActivation(const Activation& a, int m) {
  std::vector<Activation> parts(m);
  for (const torch::Tensor& t : a) {
    if (!t.defined()) {
      for (auto& p : parts) p.push_back(torch::Tensor());
      continue;
    }
    auto chunks = t.chunk(m, 0);
    for (int i = 0; i < m; ++i) parts[i].push_back(chunks[i]);
  }
  return parts;
}

}  // namespace

std::vector<Batch> SplitBatch(const Batch& batch, int num_microbatches) {
  const int64_t n = batch.size();
  if (num_microbatches < 1) {
    throw std::invalid_argument("micro-batch count must be at least 1, got " +
                                std::to_string(num_microbatches));
  }
  if (n % num_microbatches != 0) {
    throw std::invalid_argument(std::to_string(num_microbatches) +
                                " micro-batches do not divide the batch of " + std::to_string(n) +
                                " samples");
  }
  auto in = SplitActivation(batch.inputs, num_microbatches);
  auto tg = SplitActivation(batch.targets, num_microbatches);
  std::vector<Batch> out(num_microbatches);
  for (int i = 0; i < num_microbatches; ++i) out[i] = Batch{in[i], tg[i]};
  return out;
}

Activation Concat(const std::vector<Activation>& parts) {
  TORCH_CHECK(!parts.empty(), "Concat of no parts");
  Activation out;
  for (size_t i = 0; i < parts[0].size(); ++i) {
    std::vector<torch::Tensor> pieces;
    for (const Activation& p : parts) {
      TORCH_CHECK(p.size() == parts[0].size(), "Concat: parts have different arity");
      pieces.push_back(p[i]);
    }
    out.push_back(pieces[0].defined() ? torch::cat(pieces, 0) : torch::Tensor());
  }
  return out;
}

Batch GatherBatch(const std::vector<Batch>& parts) {
  std::vector<Activation> in, tg;
  for (const Batch& b : parts) {
    in.push_back(b.inputs);
    tg.push_back(b.targets);
  }
  return Batch{Concat(in), Concat(tg)};
}

Activation ToDevice(const Activation& activation, const torch::Device& device,
                    bool non_blocking) {
  Activation out;
  out.reserve(activation.size());
  for (const torch::Tensor& t : activation) {
    out.push_back(t.defined() ? t.to(device, non_blocking) : t);
  }
  return out;
}

void Algorithm::UpdateTeacher(int stage, StageImpl&, StageImpl&, int) {
  throw std::logic_error("algorithm '" + name() + "' has no teacher update, but stage " +
                         std::to_string(stage) + " was asked for one");
}

torch::Tensor Algorithm::Loss(const LossInputs&) const {
  throw std::logic_error("algorithm '" + name() +
                         "' defines neither Loss nor LossTerms; it must override one");
}

std::vector<LossTerm> Algorithm::LossTerms(const LossInputs& inputs) const {
  return {LossTerm{Loss(inputs), static_cast<double>(inputs.samples)}};
}

std::vector<double> Algorithm::LossUnits(const Batch& microbatch, int) const {
  return {static_cast<double>(microbatch.size())};
}

}  // namespace tspipe
