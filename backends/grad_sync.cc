#include "backends/grad_sync.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>
#include <string>

#include "core/lowering.h"

namespace tspipe {
namespace {

torch::Tensor GradOrZeros(const torch::Tensor& p) {
  return p.grad().defined() ? p.grad() : torch::zeros_like(p);
}

std::string Describe(const std::vector<std::pair<int, int>>& pairs) {
  std::string out;
  for (const auto& [a, b] : pairs) {
    out += (out.empty() ? "" : ", ") + std::to_string(a) + "-" + std::to_string(b);
  }
  return out.empty() ? "none" : out;
}

}  // namespace

std::vector<std::pair<int, int>> TiedStages(const std::vector<TiedGradient>& ties) {
  std::set<std::pair<int, int>> pairs;
  for (const TiedGradient& t : ties) {
    pairs.insert({std::min(t.first_stage, t.second_stage), std::max(t.first_stage, t.second_stage)});
  }
  return {pairs.begin(), pairs.end()};
}

GradientSync::GradientSync(const Schedule& schedule, std::vector<TiedGradient> ties,
                           double clip_norm)
    : ties_(std::move(ties)), clip_norm_(clip_norm) {
  schedule_.scheduler = schedule.scheduler;
  schedule_.num_stages = schedule.num_stages;
  schedule_.num_microbatches = schedule.num_microbatches;
  schedule_.workload = schedule.workload;
  schedule_.placement = schedule.placement;
  if (!(clip_norm_ >= 0) || !std::isfinite(clip_norm_)) {
    throw std::invalid_argument("gradient clipping norm " + std::to_string(clip_norm_) +
                                " is not a finite number >= 0");
  }
  const int n = schedule.num_stages;
  for (const TiedGradient& t : ties_) {
    for (int s : {t.first_stage, t.second_stage}) {
      if (s < 0 || s >= n) {
        throw std::invalid_argument("a tied parameter names stage " + std::to_string(s) +
                                    " of a " + std::to_string(n) + "-stage schedule");
      }
    }
  }
  std::vector<std::pair<int, int>> scheduled = schedule.workload.tied_stages;
  std::sort(scheduled.begin(), scheduled.end());
  scheduled.erase(std::unique(scheduled.begin(), scheduled.end()), scheduled.end());
  if (scheduled != TiedStages(ties_)) {
    throw std::invalid_argument("schedule '" + schedule.scheduler + "' sums tied gradients of "
                                "stages " + Describe(scheduled) + ", but the model ties stages " +
                                Describe(TiedStages(ties_)) +
                                " (build it with these in Workload::tied_stages)");
  }
  if (schedule.workload.clip_gradients != (clip_norm_ > 0)) {
    throw std::invalid_argument("schedule '" + schedule.scheduler + "' " +
                                (clip_norm_ > 0 ? "has no" : "has a") +
                                " gradient clipping step (GN), but the clipping norm is " +
                                std::to_string(clip_norm_) +
                                " (build it with Workload::clip_gradients to match)");
  }
}

void GradientSync::CheckStages(const std::vector<Stage>& student) const {
  for (const TiedGradient& t : ties_) {
    const auto a = student.at(t.first_stage)->parameters();
    const auto b = student.at(t.second_stage)->parameters();
    if (t.first_index < 0 || t.first_index >= static_cast<int>(a.size()) || t.second_index < 0 ||
        t.second_index >= static_cast<int>(b.size())) {
      throw std::invalid_argument("a tied parameter's index is outside its stage's parameters");
    }
    if (!a[t.first_index].sizes().equals(b[t.second_index].sizes())) {
      throw std::invalid_argument("tied parameters of stages " + std::to_string(t.first_stage) +
                                  " and " + std::to_string(t.second_stage) + " differ in shape");
    }
  }
}

void GradientSync::SumTied(int rank, int peer, const std::map<int, StageImpl*>& stages,
                           const CollectiveId& id, Transport& transport,
                           std::chrono::milliseconds timeout,
                           const std::atomic<bool>& abort) const {
  torch::NoGradGuard no_grad;
  std::map<int, std::vector<torch::Tensor>> params;
  for (const auto& [s, stage] : stages) params[s] = stage->parameters();
  // This rank's copies of the ties shared with `peer`, in tie and replica
  // order (the same order on both sides).
  std::vector<torch::Tensor*> mine;
  for (const TiedGradient& t : ties_) {
    const auto& first = schedule_.placement[t.first_stage];
    const auto& second = schedule_.placement[t.second_stage];
    for (size_t rep = 0; rep < first.size() && rep < second.size(); ++rep) {
      const int ra = first[rep], rb = second[rep];
      if (peer == kNoPeer) {
        if (ra != rank || rb != rank) continue;
        // Both copies here: first + second, the order the all-reduce sums in.
        torch::Tensor& a = params.at(t.first_stage).at(t.first_index);
        torch::Tensor& b = params.at(t.second_stage).at(t.second_index);
        const torch::Tensor sum = GradOrZeros(a) + GradOrZeros(b);
        a.mutable_grad() = sum;
        b.mutable_grad() = sum.clone();
      } else if (ra == rank && rb == peer) {
        mine.push_back(&params.at(t.first_stage).at(t.first_index));
      } else if (ra == peer && rb == rank) {
        mine.push_back(&params.at(t.second_stage).at(t.second_index));
      }
    }
  }
  if (peer == kNoPeer || mine.empty()) return;
  // One flat bucket: a collective takes one tensor (NCCL), or sums every
  // tensor it is given into one (gloo), whatever the ties' shapes.
  std::vector<torch::Tensor> grads;
  for (torch::Tensor* p : mine) grads.push_back(GradOrZeros(*p));
  std::vector<torch::Tensor> bucket{
      Flatten(grads, grads.front().scalar_type(), grads.front().device())};
  // Named alike on both sides; a sum of two is the same in either order.
  const std::vector<int> group{std::min(rank, peer), std::max(rank, peer)};
  transport.AllReduce(rank, group, id, &bucket, timeout, abort);
  const std::vector<torch::Tensor> sums = Unflatten(bucket[0], grads);
  for (size_t i = 0; i < mine.size(); ++i) mine[i]->mutable_grad() = sums[i];
}

void GradientSync::Clip(int rank, const std::map<int, StageImpl*>& stages, const CollectiveId& id,
                        Transport& transport, std::chrono::milliseconds timeout,
                        const std::atomic<bool>& abort) const {
  if (clip_norm_ <= 0 || stages.empty()) return;
  torch::NoGradGuard no_grad;
  std::map<int, std::vector<torch::Tensor>> params;
  for (const auto& [s, stage] : stages) params[s] = stage->parameters();
  // Copies the norm leaves out: the second of each tie.
  std::set<std::pair<int, int>> second;
  for (const TiedGradient& t : ties_) second.insert({t.second_stage, t.second_index});
  // torch.nn.utils.clip_grad_norm_: total = ||(||g_1||, ..., ||g_n||)||,
  // factor = max_norm / (total + 1e-6), at most 1.
  torch::Tensor squares;
  for (const auto& [s, list] : params) {
    for (size_t i = 0; i < list.size(); ++i) {
      if (!list[i].grad().defined() || second.count({s, static_cast<int>(i)})) continue;
      const torch::Tensor sq = list[i].grad().norm().to(torch::kFloat64).pow(2).reshape({1});
      squares = squares.defined() ? squares + sq : sq;
    }
  }
  const torch::Device device = params.begin()->second.empty() ? torch::Device(torch::kCPU)
                                                              : params.begin()->second[0].device();
  if (!squares.defined()) {
    squares = torch::zeros({1}, torch::TensorOptions(torch::kFloat64).device(device));
  }
  const int replica = schedule_.ReplicaIndex(stages.begin()->first, rank);
  const std::vector<int> group = ReplicaRanks(schedule_, replica);
  if (group.size() > 1) {
    std::vector<torch::Tensor> bucket{squares};
    transport.AllReduce(rank, group, id, &bucket, timeout, abort);
    squares = bucket[0];
  }
  const double total = std::sqrt(squares.item<double>());
  const double factor = clip_norm_ / (total + 1e-6);
  if (factor >= 1.0) return;
  for (auto& [s, list] : params) {
    for (torch::Tensor& p : list) {
      if (p.grad().defined()) p.mutable_grad().mul_(factor);
    }
  }
}

}  // namespace tspipe
