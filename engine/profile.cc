#include "engine/profile.h"

#include <algorithm>
#include <chrono>

#include "core/microbatch.h"

namespace tspipe {
namespace {

// Times `fn` (warm-up runs first) and returns the median in ms.
template <typename Fn>
double MedianMs(const torch::Device& device, Fn fn) {
  const int warmup = 2, reps = 5;
  std::vector<double> ms;
  for (int i = 0; i < warmup + reps; ++i) {
    if (device.is_cuda()) torch::cuda::synchronize(device.index());
    auto start = std::chrono::steady_clock::now();
    fn();
    if (device.is_cuda()) torch::cuda::synchronize(device.index());
    double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                   .count();
    if (i >= warmup) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

BlockTimes ProfileBlocks(const BlockList& blocks, const Activation& sample,
                         const torch::Device& device, bool with_backward, bool train_mode) {
  BlockTimes times;
  Activation x = ToDevice(sample, device);
  for (const Block& block : blocks) {
    block->to(device);
    block->train(with_backward || train_mode);
    auto leaves = [&] {
      Activation leaf;
      for (const torch::Tensor& t : x) {
        leaf.push_back(t.is_floating_point() ? t.detach().requires_grad_(with_backward) : t);
      }
      return leaf;
    };
    const double f = MedianMs(device, [&] {
      if (with_backward) {
        block->Forward(leaves());
      } else {
        torch::NoGradGuard no_grad;
        block->Forward(x);
      }
    });
    times.forward.push_back(f);
    if (with_backward) {
      const double fb = MedianMs(device, [&] {
        Activation out = block->Forward(leaves());
        // Masks and indices pass through blocks without gradients.
        std::vector<torch::Tensor> outputs, grads;
        for (const torch::Tensor& t : out) {
          if (!t.defined() || !t.requires_grad()) continue;
          outputs.push_back(t);
          grads.push_back(torch::ones_like(t));
        }
        if (!outputs.empty()) torch::autograd::backward(outputs, grads);
      });
      times.backward.push_back(std::max(0.0, fb - f));
    }
    torch::NoGradGuard no_grad;
    x = block->Forward(x);
  }
  return times;
}

}  // namespace tspipe
