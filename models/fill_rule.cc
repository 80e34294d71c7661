#include "models/fill_rule.h"

#include <cmath>
#include <map>
#include <string>

namespace tspipe {

bool IsStepCount(const std::string& name) {
  const std::string suffix = "num_batches_tracked";
  return name.size() >= suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void Fill(torch::nn::Module& module) {
  std::map<std::string, torch::Tensor> tensors;  // Name order, as Python's sorted().
  for (const auto& p : module.named_parameters()) tensors[p.key()] = p.value();
  for (const auto& b : module.named_buffers()) tensors[b.key()] = b.value();
  torch::NoGradGuard no_grad;
  int k = 0;
  for (auto& [name, t] : tensors) {
    const int index = k++;
    // LibTorch's Module::to(dtype) converts integer buffers too; PyTorch's
    // .double() leaves batch norm's step count an integer, and fill() skips it.
    if (!t.is_floating_point() || IsStepCount(name)) continue;
    const int64_t n = t.numel();
    torch::Tensor base = torch::sin(torch::arange(n, torch::kFloat64) * 0.7 + 1.3 * index);
    auto ends_with = [&](const std::string& suffix) {
      return name.size() >= suffix.size() &&
             name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    torch::Tensor v;
    if (ends_with("running_var")) {
      v = 1 + 0.5 * base.abs();
    } else if (t.dim() >= 2) {
      v = base / std::sqrt(static_cast<double>(n) / static_cast<double>(t.size(0)));
    } else if (ends_with("weight")) {
      v = 1 + 0.2 * base;
    } else {
      v = 0.1 * base;
    }
    t.copy_(v.reshape(t.sizes()));
  }
}

torch::Tensor Sines(const std::vector<int64_t>& shape, double phase) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return torch::sin(torch::arange(n, torch::kFloat64) * 0.37 + phase).reshape(shape);
}

}  // namespace tspipe
