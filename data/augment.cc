#include "data/augment.h"

#include <cmath>

namespace tspipe {

torch::Tensor Augment(const torch::Tensor& images, const AugmentOptions& o,
                      at::Generator& generator) {
  TORCH_CHECK(images.dim() == 4, "Augment expects [N, C, H, W] images, got ", images.sizes());
  const int64_t n = images.size(0);
  auto uniform = [&](double lo, double hi) {
    return torch::rand({n}, generator, torch::dtype(torch::kFloat32)) * (hi - lo) + lo;
  };
  // Random resized crop as an affine sampling grid: the output spans a
  // window of half-size (w, h) centred at (cx, cy) in [-1, 1] coordinates.
  torch::Tensor area = uniform(o.min_scale, 1.0);
  torch::Tensor log_ratio = uniform(-std::log(o.aspect), std::log(o.aspect));
  torch::Tensor w = torch::sqrt(area * torch::exp(log_ratio)).clamp_max(1.0);
  torch::Tensor h = torch::sqrt(area / torch::exp(log_ratio)).clamp_max(1.0);
  torch::Tensor cx = uniform(-1.0, 1.0) * (1.0 - w);
  torch::Tensor cy = uniform(-1.0, 1.0) * (1.0 - h);
  torch::Tensor flip = torch::where(uniform(0.0, 1.0) < o.flip_probability,
                                    torch::full({n}, -1.0), torch::full({n}, 1.0));
  torch::Tensor zero = torch::zeros({n});
  torch::Tensor theta = torch::stack({torch::stack({w * flip, zero, cx}, 1),
                                      torch::stack({zero, h, cy}, 1)},
                                     1)
                            .to(images.options());
  namespace F = torch::nn::functional;
  torch::Tensor grid =
      F::affine_grid(theta, images.sizes().vec(), /*align_corners=*/false);
  torch::Tensor out = F::grid_sample(
      images, grid,
      F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kBorder).align_corners(
          false));
  // Colour jitter around each image's mean, then noise.
  // The random numbers come from `generator` on the CPU whatever the
  // images' device, so a seed gives the same views on CPU and GPU.
  auto per_sample = [&](const torch::Tensor& v) {
    return v.to(images.options()).view({n, 1, 1, 1});
  };
  torch::Tensor mean = out.mean({1, 2, 3}, /*keepdim=*/true);
  out = (out - mean) * per_sample(uniform(1.0 - o.contrast, 1.0 + o.contrast)) + mean +
        per_sample(uniform(-o.brightness, o.brightness));
  torch::Tensor sigma = per_sample(uniform(0.0, o.noise));
  out = out + sigma * torch::randn(out.sizes(), generator, out.options().device(torch::kCPU))
                          .to(out.device());
  return out;
}

}  // namespace tspipe
