// DistilBERT (Sanh et al. 2019): a BERT student with half the teacher's
// layers learns masked language modelling from the teacher's soft targets
// and hidden states. The loss, as Hugging Face's distiller.py runs it:
//   alpha_ce  * T^2 KL(softmax(t/T) || softmax(s/T))   mean over tokens
//   alpha_mlm * CE(s, masked labels)                   mean over masked tokens
//   alpha_cos * (1 - cos(h_s, h_t))                    mean over tokens
// ("tokens" = every non-pad token, or only the masked ones with
// restrict_ce_to_mask). The terms are token means, reported as LossTerms
// with their token counts, so every scheduler trains exactly the
// sequential loss however micro-batches and replicas split the tokens.
#ifndef TSPIPE_ALGORITHMS_DISTILBERT_H_
#define TSPIPE_ALGORITHMS_DISTILBERT_H_

#include <torch/torch.h>

#include <string>
#include <vector>

#include "core/algorithm.h"

namespace tspipe {

struct DistilBertLossOptions {
  double alpha_ce = 5.0;
  double alpha_mlm = 2.0;
  double alpha_cos = 1.0;
  double temperature = 2.0;
  bool restrict_ce_to_mask = false;
};

// The loss above. Student and teacher outputs: {logits [N, T, V], last
// hidden [N, T, H], attention mask [N, T]}; targets: {labels [N, T]}
// (kIgnoreLabel where nothing is predicted). Without a teacher
// (alpha_ce = alpha_cos = 0) only the MLM term.
class DistilBertLoss : public Algorithm {
 public:
  explicit DistilBertLoss(const DistilBertLossOptions& options);
  std::string name() const override { return "distilbert"; }
  Workload workload() const override;
  std::vector<LossTerm> LossTerms(const LossInputs& inputs) const override;
  std::vector<double> LossUnits(const Batch& microbatch, int stage) const override;
  bool has_teacher() const { return options_.alpha_ce > 0 || options_.alpha_cos > 0; }

 private:
  DistilBertLossOptions options_;
};

// Which teacher layer each student layer starts from: DistilBERT's "every
// other layer", keeping the first and the last (12 -> 6: 0 2 4 7 9 11).
// Throws std::invalid_argument unless 0 < student_layers <= teacher_layers.
std::vector<int> StudentLayerMap(int teacher_layers, int student_layers);

}  // namespace tspipe

#endif  // TSPIPE_ALGORITHMS_DISTILBERT_H_
