// Plain supervised classification (cross-entropy on labels): no teacher. The
// baseline every teacher-student method is compared with, and the workload
// the foundation's GPipe equivalence tests train.
#ifndef TSPIPE_ALGORITHMS_SUPERVISED_H_
#define TSPIPE_ALGORITHMS_SUPERVISED_H_

#include "core/algorithm.h"

namespace tspipe {

class SupervisedAlgorithm : public Algorithm {
 public:
  std::string name() const override { return "supervised"; }
  Workload workload() const override;
  // Mean cross-entropy of student logits (*student)[0] against labels
  // (*targets)[0].
  torch::Tensor Loss(const LossInputs& inputs) const override;
};

}  // namespace tspipe

#endif  // TSPIPE_ALGORITHMS_SUPERVISED_H_
