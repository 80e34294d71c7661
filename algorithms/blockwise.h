// Blockwise distillation (DNA, Li et al. 2020; as trained by Pipe-BD, Jang et
// al. 2023): the teacher is cut into blocks T0..Tn-1 and the student into as
// many blocks S0..Sn-1 with the same input and output shapes. Student block
// i reads the teacher's input of block i (t(i-1), or the image) and learns
// to reproduce the teacher's output t(i):
//   loss_i = MSE(S_i(t(i-1)), t(i))                          for i < n-1,
//   loss_n-1 = soft cross-entropy(S_n-1(t(n-2)), softmax(t(n-1))),
// each with its own gradient: the blocks share nothing, so they train
// independently, which is what lets Pipe-BD relay the teacher's activations
// through the devices and step each device's blocks as soon as it is done.
// A stage of the schedule is one block pair (Workload::blockwise).
#ifndef TSPIPE_ALGORITHMS_BLOCKWISE_H_
#define TSPIPE_ALGORITHMS_BLOCKWISE_H_

#include "core/algorithm.h"

namespace tspipe {

class BlockwiseDistillation : public Algorithm {
 public:
  std::string name() const override { return "blockwise"; }
  Workload workload() const override;
  // (*student)[0]: the student block's output; (*teacher)[0]: the teacher
  // block's output (logits on the last stage). Labels are unused.
  torch::Tensor Loss(const LossInputs& inputs) const override;
};

// The two losses, for tests and loops outside the executor: the mean
// squared error over every element, and the soft cross-entropy
// -sum_c softmax(t)_c log softmax(s)_c averaged over the samples.
torch::Tensor BlockMseLoss(const torch::Tensor& student, const torch::Tensor& teacher);
torch::Tensor SoftCrossEntropy(const torch::Tensor& student_logits,
                               const torch::Tensor& teacher_logits);

}  // namespace tspipe

#endif  // TSPIPE_ALGORITHMS_BLOCKWISE_H_
