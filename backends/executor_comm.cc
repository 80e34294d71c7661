// The executor's handlers for what crosses ranks and what ends a step:
// sends and receives (SA/RA, ST/RT, SG/RG; MessageOf names each message),
// collectives (AR, TG, GN; CollectiveOf names each), the optimizer step (O)
// and the teacher update (U).
#include "backends/executor_impl.h"

namespace tspipe {

Activation Executor::Impl::Receive(int rank, const Action& a) {
  return transport_->Receive(rank, a.peer, MessageOf(a, rank, current_[rank]).key,
                             options_.recv_timeout, abort_);
}

void Executor::Impl::SendActivation(int rank, const Action& a) {
  const Activation& out = Slot(rank, a.stage).outputs[a.microbatch];
  TORCH_CHECK(!out.empty(), "nothing to send");
  transport_->Send(rank, a.peer, MessageOf(a, rank, current_[rank]).key, Detached(out));
}

void Executor::Impl::RecvActivation(int rank, const Action& a) {
  Slot(rank, a.stage).inputs[a.microbatch] = Leaf(Receive(rank, a));
}

void Executor::Impl::SendTeacherActivation(int rank, const Action& a) {
  if (Data(rank, a.batch_offset) == nullptr) return;  // Look-ahead past the end.
  StageSlot& slot = Slot(rank, a.stage);
  const Activation& out = slot.teacher_outputs.at(BatchOf(rank, a)).at(a.microbatch);
  transport_->Send(rank, a.peer, MessageOf(a, rank, current_[rank]).key, out);
  ReleaseTeacher(slot, BatchOf(rank, a), a.microbatch);
}

void Executor::Impl::RecvTeacherActivation(int rank, const Action& a) {
  if (Data(rank, a.batch_offset) == nullptr) return;
  auto& inputs = Slot(rank, a.stage).teacher_inputs[BatchOf(rank, a)];
  inputs.resize(schedule_.num_microbatches);
  inputs[a.microbatch] = Receive(rank, a);
}

void Executor::Impl::SendGradient(int rank, const Action& a) {
  Activation& g = Slot(rank, a.stage).input_grads[a.microbatch];
  TORCH_CHECK(!g.empty(), "no input gradient to send");
  transport_->Send(rank, a.peer, MessageOf(a, rank, current_[rank]).key, g);
  g.clear();
}

void Executor::Impl::RecvGradient(int rank, const Action& a) {
  Slot(rank, a.stage).output_grads[a.microbatch] = Receive(rank, a);
}

// Starts summing the stage's gradients over its replicas; the stage's
// OptimizerStep waits for the sums (so the backward of earlier stages
// overlaps the communication where the transport allows). Losses are
// already weighted by each replica's share of the mini-batch, so the sum is
// the mini-batch gradient. Gradients travel as one flattened bucket per
// stage: one collective instead of one per parameter.
void Executor::Impl::AllReduceGradients(int rank, const Action& a) {
  StageSlot& slot = Slot(rank, a.stage);
  std::vector<torch::Tensor> params = slot.student->parameters();
  if (params.empty()) return;
  std::vector<torch::Tensor> grads;
  for (const torch::Tensor& p : params) {
    grads.push_back(p.grad().defined() ? p.grad() : torch::zeros_like(p));
  }
  slot.reduce_bucket = {Flatten(grads, params[0].scalar_type(), params[0].device())};
  slot.pending_reduce = transport_->StartAllReduce(
      rank, schedule_.placement[a.stage], CollectiveOf(a, current_[rank]), &slot.reduce_bucket,
      options_.recv_timeout, abort_);
}

// Puts a finished all-reduce's sums into the stage's gradients.
void Executor::Impl::FinishAllReduce(StageSlot& slot) {
  if (!slot.pending_reduce) return;
  slot.pending_reduce->Wait(options_.recv_timeout);
  slot.pending_reduce.reset();
  // Copies, not views of the bucket: the optimizer's zero_grad detaches
  // gradients in place, which views do not allow.
  std::vector<torch::Tensor> params = slot.student->parameters();
  const std::vector<torch::Tensor> sums = Unflatten(slot.reduce_bucket[0], params);
  for (size_t i = 0; i < params.size(); ++i) params[i].mutable_grad() = sums[i];
  slot.reduce_bucket.clear();
}

std::map<int, StageImpl*> Executor::Impl::FinalGradients(int rank) {
  std::map<int, StageImpl*> stages;
  for (auto& [s, slot] : slots_[rank]) {
    FinishAllReduce(slot);
    stages[s] = slot.student.get();
  }
  return stages;
}

void Executor::Impl::SumTiedGradients(int rank, const Action& a) {
  sync_->SumTied(rank, a.peer, FinalGradients(rank), CollectiveOf(a, current_[rank]), *transport_,
                 options_.recv_timeout, abort_);
}

void Executor::Impl::ClipGradients(int rank, const Action& a) {
  sync_->Clip(rank, FinalGradients(rank), CollectiveOf(a, current_[rank]), *transport_,
              options_.recv_timeout, abort_);
}

void Executor::Impl::OptimizerStep(int rank, const Action& a) {
  StageSlot& slot = Slot(rank, a.stage);
  if (!slot.optimizer) return;  // A stage without parameters.
  FinishAllReduce(slot);
  if (options_.before_step) {
    options_.before_step(*slot.optimizer, static_cast<int>(current_[rank]) + 1);
  }
  slot.optimizer->step();
  // The only place gradients are zeroed: once per step, after the update.
  slot.optimizer->zero_grad();
}

void Executor::Impl::TeacherUpdate(int rank, const Action& a) {
  StageSlot& slot = Slot(rank, a.stage);
  const int step = static_cast<int>(current_[rank]) + 1;
  if (!schedule_.workload.independent_replicas) {
    algorithm_->UpdateTeacher(a.stage, *slot.student, *slot.teacher, step);
    return;
  }
  // Models teaching each other: at exchange steps every replica of the
  // stage sends its student's state to the others, which load it into
  // their copies of it; in between the copies stay as they are.
  if (!algorithm_->ExchangesAt(step)) return;
  const std::vector<int>& group = schedule_.placement[a.stage];
  std::vector<std::vector<torch::Tensor>> parts =
      transport_->AllGather(rank, group, CollectiveOf(a, current_[rank]), StageState(*slot.student),
                            options_.recv_timeout, abort_);
  const int own = schedule_.ReplicaIndex(a.stage, rank);
  parts.erase(parts.begin() + own);
  LoadPeerCopies(*slot.teacher, parts);
}

}  // namespace tspipe
