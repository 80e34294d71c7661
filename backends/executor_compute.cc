// The executor's compute handlers: student and teacher forwards, whole and
// split backwards (backends/executor_impl.h).
#include <memory>

#include "backends/executor_impl.h"
#include "backends/split_backward.h"

namespace tspipe {
namespace {

// The outputs of micro-batch k that carry a gradient, with it.
void Differentiable(StageSlot& slot, int k, std::vector<torch::Tensor>* tensors,
                    std::vector<torch::Tensor>* grads) {
  Activation& out = slot.outputs[k];
  Activation& grad = slot.output_grads[k];
  TORCH_CHECK(!out.empty(), "no forward output to differentiate");
  TORCH_CHECK(grad.size() == out.size(), "the gradient of the output is missing");
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i].defined() && out[i].requires_grad() && grad[i].defined()) {
      tensors->push_back(out[i]);
      grads->push_back(grad[i]);
    }
  }
}

bool Differentiates(const torch::Tensor& t) { return t.defined() && t.requires_grad(); }

// One gradient per stage input from `got`, the gradients of the inputs
// that require one, in order: zeros where none reached an input,
// undefined for inputs without gradients (masks, indices).
Activation PerInput(const Activation& inputs, const std::vector<torch::Tensor>& got) {
  Activation out;
  size_t j = 0;
  for (const torch::Tensor& t : inputs) {
    if (!Differentiates(t)) {
      out.push_back(torch::Tensor());
      continue;
    }
    const torch::Tensor& g = got.at(j++);
    out.push_back(g.defined() ? g : torch::zeros_like(t));
  }
  return out;
}

}  // namespace

void Executor::Impl::Forward(int rank, const Action& a) {
  StageSlot& slot = Slot(rank, a.stage);
  Activation& input = slot.inputs[a.microbatch];
  if (schedule_.workload.blockwise) {
    // Set by the stage's TeacherForward: the teacher's input.
  } else if (a.stage == 0) {
    input = ToDevice(Current(rank)[a.microbatch].inputs, Dev(rank), /*non_blocking=*/true);
  } else if (Local(rank, a.stage - 1)) {
    input = Leaf(Slot(rank, a.stage - 1).outputs[a.microbatch]);
  }
  TORCH_CHECK(!input.empty(), "no input for ", ToString(a));
  slot.outputs[a.microbatch] = slot.student->Forward(input);
}

void Executor::Impl::TeacherForward(int rank, const Action& a) {
  StageSlot& slot = Slot(rank, a.stage);
  const std::vector<Batch>* data = Data(rank, a.batch_offset);
  if (data == nullptr) return;  // Look-ahead past the end of training.
  const int64_t batch = current_[rank] + a.batch_offset;
  Activation input;
  if (a.stage == 0) {
    input = ToDevice((*data)[a.microbatch].inputs, Dev(rank), /*non_blocking=*/true);
  } else if (Local(rank, a.stage - 1)) {
    input = Slot(rank, a.stage - 1).teacher_outputs.at(batch).at(a.microbatch);
    ReleaseTeacher(Slot(rank, a.stage - 1), batch, a.microbatch);
  } else {
    input = std::move(slot.teacher_inputs.at(batch).at(a.microbatch));
  }
  // Blockwise: the student stage learns from the same input (no gradient
  // flows into it: it comes from the teacher, or the data).
  if (schedule_.workload.blockwise && a.batch_offset == 0) slot.inputs[a.microbatch] = input;
  torch::NoGradGuard no_grad;
  auto& outs = slot.teacher_outputs[batch];
  outs.resize(schedule_.num_microbatches);
  outs[a.microbatch] = slot.teacher->Forward(input);
  if (schedule_.workload.blockwise) {
    auto& readers = slot.teacher_readers[batch];
    readers.resize(schedule_.num_microbatches);
    readers[a.microbatch] = a.stage < schedule_.num_stages - 1 ? 2 : 1;
  }
}

// Blockwise: a teacher output has two readers, its stage's loss and the
// next stage (its teacher forward, or the send to it); the last stage's
// only the loss. After the last one it is dropped, so a device holds the
// teacher activations of the micro-batches in flight, not of the whole
// iteration.
void Executor::Impl::ReleaseTeacher(StageSlot& slot, int64_t batch, int microbatch) {
  if (!schedule_.workload.blockwise) return;
  auto it = slot.teacher_readers.find(batch);
  if (it == slot.teacher_readers.end() || --it->second.at(microbatch) > 0) return;
  slot.teacher_outputs.at(batch).at(microbatch).clear();
}

// Hands d loss / d inputs of micro-batch k (one entry per stage input,
// undefined for those without a gradient) to the previous stage: here,
// or through the stage's SG.
void Executor::Impl::PassInputGradients(int rank, const Action& a, Activation input_grads) {
  if (a.stage == 0 || schedule_.workload.local_losses) return;
  if (Local(rank, a.stage - 1)) {
    Slot(rank, a.stage - 1).output_grads[a.microbatch] = std::move(input_grads);
  } else {
    Slot(rank, a.stage).input_grads[a.microbatch] = std::move(input_grads);
  }
}

void Executor::Impl::Backward(int rank, const Action& a) {
  StageSlot& slot = Slot(rank, a.stage);
  const int k = a.microbatch;
  std::vector<torch::Tensor> tensors, grads;
  Differentiable(slot, k, &tensors, &grads);
  if (!tensors.empty()) torch::autograd::backward(tensors, grads);
  std::vector<torch::Tensor> got;
  for (const torch::Tensor& t : slot.inputs[k]) {
    if (Differentiates(t)) got.push_back(t.grad());
  }
  PassInputGradients(rank, a, PerInput(slot.inputs[k], got));
  slot.outputs[k].clear();
  slot.output_grads[k].clear();
  slot.inputs[k].clear();
}

// I: the input gradients now; the graph waits for the W (SplitBackward).
void Executor::Impl::BackwardInput(int rank, const Action& a) {
  StageSlot& slot = Slot(rank, a.stage);
  const int k = a.microbatch;
  std::vector<torch::Tensor> tensors, grads, wrt;
  Differentiable(slot, k, &tensors, &grads);
  // Stage 0's inputs are data: no input pass, the W does it all.
  const bool wants_inputs = a.stage > 0 && !schedule_.workload.local_losses;
  for (const torch::Tensor& t : slot.inputs[k]) {
    if (wants_inputs && Differentiates(t)) wrt.push_back(t);
  }
  auto split = std::make_unique<SplitBackward>(std::move(tensors), std::move(grads), wrt,
                                               slot.student->parameters());
  std::vector<torch::Tensor> got = split->InputGradients();
  if (wants_inputs) PassInputGradients(rank, a, PerInput(slot.inputs[k], got));
  slot.split[k] = std::move(split);
  slot.outputs[k].clear();
  slot.output_grads[k].clear();
  slot.inputs[k].clear();
}

// W: accumulates the parameter gradients and frees the graph.
void Executor::Impl::BackwardWeight(int rank, const Action& a) {
  std::unique_ptr<SplitBackward>& split = Slot(rank, a.stage).split[a.microbatch];
  TORCH_CHECK(split != nullptr, "no input-gradient action ran before ", ToString(a));
  split->AccumulateWeightGradients();
  split.reset();
}

}  // namespace tspipe
