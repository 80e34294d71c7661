// The deterministic weights and inputs that tools/make_vision_goldens.py
// computes too, so golden files from PyTorch need not carry weight sets.
#ifndef TSPIPE_MODELS_FILL_RULE_H_
#define TSPIPE_MODELS_FILL_RULE_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tspipe {

// The script's fill(): tensor k of the module's parameters and buffers in
// name order gets sin(0.7 i + 1.3 k) over its elements i, scaled so that
// matrices and kernels have ~1/sqrt(fan_in) entries, norm weights sit near
// 1, biases and running means near 0 and running variances in [1, 1.5].
// Integer buffers are left alone (but counted in k).
void Fill(torch::nn::Module& module);

// Batch norm's num_batches_tracked: an integer in PyTorch, which
// LibTorch's Module::to(kFloat64) turns into a double; golden files leave
// it out.
bool IsStepCount(const std::string& name);

// The script's sines(): sin(0.37 i + phase) in float64, shaped.
torch::Tensor Sines(const std::vector<int64_t>& shape, double phase);

}  // namespace tspipe

#endif  // TSPIPE_MODELS_FILL_RULE_H_
