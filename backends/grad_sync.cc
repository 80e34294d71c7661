#include "backends/grad_sync.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>

#include "core/message.h"

namespace tspipe {
namespace {

// Ranks that hold the stages of replica `replica`, in stage order, each once.
std::vector<int> ModelRanks(const std::vector<std::vector<int>>& placement, int replica) {
  std::vector<int> out;
  for (const std::vector<int>& ranks : placement) {
    const int r = ranks.at(replica);
    if (std::find(out.begin(), out.end(), r) == out.end()) out.push_back(r);
  }
  return out;
}

// Runs the teacher prologue and two iterations of `schedule` as message
// passing in which every rank, at its sync point, waits for all of its
// `partners` to reach theirs. Returns "" or what the stuck ranks wait for.
std::string FindDeadlock(const Schedule& schedule, const std::vector<int>& points,
                         const std::vector<std::set<int>>& partners) {
  const int ranks = schedule.num_ranks();
  const Schedule prologue = TeacherPrologue(schedule);
  struct Step {
    Action action;
    int64_t base;
  };
  std::vector<std::vector<Step>> lists(ranks);
  std::vector<std::vector<size_t>> sync_at(ranks);  // Positions in lists[r].
  for (int r = 0; r < ranks; ++r) {
    if (r < prologue.num_ranks()) {
      for (const Action& a : prologue.ranks[r]) lists[r].push_back({a, 0});
    }
    for (int it = 0; it < 2; ++it) {
      if (points[r] >= 0) sync_at[r].push_back(lists[r].size() + points[r]);
      for (const Action& a : schedule.ranks[r]) lists[r].push_back({a, it});
    }
  }
  std::multiset<MessageId> posted;
  std::vector<size_t> pos(ranks, 0);
  std::vector<int> reached(ranks, 0), passed(ranks, 0);
  bool progress = true;
  while (progress) {
    progress = false;
    for (int r = 0; r < ranks; ++r) {
      while (true) {
        const size_t k = static_cast<size_t>(passed[r]);
        if (k < sync_at[r].size() && pos[r] == sync_at[r][k]) {
          reached[r] = std::max(reached[r], passed[r] + 1);
          bool all = true;
          for (int q : partners[r]) all = all && reached[q] >= passed[r] + 1;
          if (!all) break;
          ++passed[r];
          progress = true;
          continue;
        }
        if (pos[r] == lists[r].size()) break;
        const Step& s = lists[r][pos[r]];
        if (IsCommunication(s.action.op)) {
          const MessageId id = MessageOf(s.action, r, s.base);
          if (IsSend(s.action.op)) {
            posted.insert(id);
          } else {
            auto it = posted.find(id);
            if (it == posted.end()) break;
            posted.erase(it);
          }
        }
        ++pos[r];
        progress = true;
      }
    }
  }
  std::string stuck;
  for (int r = 0; r < ranks; ++r) {
    if (pos[r] == lists[r].size()) continue;
    const size_t k = static_cast<size_t>(passed[r]);
    stuck += (stuck.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) + " waits " +
             (k < sync_at[r].size() && pos[r] == sync_at[r][k]
                  ? std::string("for its partners at the gradient sync")
                  : "at " + ToString(lists[r][pos[r]].action));
  }
  return stuck;
}

}  // namespace

GradientSync::GradientSync(const Schedule& schedule, std::vector<TiedGradient> ties,
                           double clip_norm)
    : placement_(schedule.placement), ties_(std::move(ties)), clip_norm_(clip_norm) {
  const int ranks = schedule.num_ranks();
  points_.assign(ranks, -1);
  replica_.assign(ranks, -1);
  if (!(clip_norm_ >= 0) || !std::isfinite(clip_norm_)) {
    throw std::invalid_argument("gradient clipping norm " + std::to_string(clip_norm_) +
                                " is not a finite number >= 0");
  }
  if (!active()) return;
  const int n = schedule.num_stages;
  for (const TiedGradient& t : ties_) {
    for (int s : {t.first_stage, t.second_stage}) {
      if (s < 0 || s >= n) {
        throw std::invalid_argument("a tied parameter names stage " + std::to_string(s) +
                                    " of a " + std::to_string(n) + "-stage schedule");
      }
    }
    if (placement_[t.first_stage].size() != placement_[t.second_stage].size()) {
      throw std::invalid_argument("stages " + std::to_string(t.first_stage) + " and " +
                                  std::to_string(t.second_stage) +
                                  " share a tied parameter but have different replica counts");
    }
  }
  for (const std::vector<int>& p : placement_) {
    max_replicas_ = std::max(max_replicas_, static_cast<int>(p.size()));
    if (clip_norm_ > 0 && p.size() != placement_[0].size()) {
      throw std::invalid_argument("gradient clipping needs every stage with the same replica "
                                  "count; schedule '" + schedule.scheduler + "' varies them");
    }
  }
  for (int r = 0; r < ranks; ++r) {
    for (int s : schedule.StagesOnRank(r)) {
      const int rep = schedule.ReplicaIndex(s, r);
      if (replica_[r] >= 0 && replica_[r] != rep) {
        throw std::invalid_argument("rank " + std::to_string(r) +
                                    " holds stages of different replicas; tied parameters and "
                                    "gradient clipping need one model per rank");
      }
      replica_[r] = rep;
    }
    const std::vector<Action>& list = schedule.ranks[r];
    int last_backward = -1, first_step = -1;
    for (int i = 0; i < static_cast<int>(list.size()); ++i) {
      const Op op = list[i].op;
      if (op == Op::kBackward || op == Op::kBackwardInput || op == Op::kBackwardWeight ||
          op == Op::kSendGradient || op == Op::kAllReduceGradients) {
        last_backward = i;
      }
      if (op == Op::kOptimizerStep && first_step < 0) first_step = i;
    }
    if (first_step >= 0 && first_step < last_backward) {
      throw std::invalid_argument(
          "schedule '" + schedule.scheduler + "' steps an optimizer on rank " + std::to_string(r) +
          " (" + ToString(list[first_step]) + ") before its last backward (" +
          ToString(list[last_backward]) +
          "); tied parameters and gradient clipping need every gradient of the rank first");
    }
    if (last_backward >= 0) {
      points_[r] = last_backward + 1;
    } else if (first_step >= 0) {
      points_[r] = first_step;
    }
  }
  // Who waits for whom at the sync points.
  std::vector<std::set<int>> partners(ranks);
  auto join = [&](const std::vector<int>& group) {
    for (int a : group) {
      for (int b : group) {
        if (a != b) partners[a].insert(b);
      }
    }
  };
  for (int rep = 0; rep < max_replicas_; ++rep) {
    for (const TiedGradient& t : ties_) {
      if (rep < static_cast<int>(placement_[t.first_stage].size())) {
        join({placement_[t.first_stage][rep], placement_[t.second_stage][rep]});
      }
    }
    if (clip_norm_ > 0 && rep < static_cast<int>(placement_[0].size())) {
      join(ModelRanks(placement_, rep));
    }
  }
  const std::string stuck = FindDeadlock(schedule, points_, partners);
  if (!stuck.empty()) {
    throw std::invalid_argument("schedule '" + schedule.scheduler +
                                "' would deadlock summing tied gradients or the clipping norm "
                                "across ranks after their last backward: " + stuck);
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
                                  " and " + std::to_string(t.second_stage) +
                                  " differ in shape");
    }
  }
}

int GradientSync::CollectiveId(int index, int replica) const {
  return -2 - (index * max_replicas_ + replica);
}

namespace {

torch::Tensor GradOrZeros(const torch::Tensor& p) {
  return p.grad().defined() ? p.grad() : torch::zeros_like(p);
}

}  // namespace

void GradientSync::Finish(int rank, int64_t batch, const std::map<int, StageImpl*>& stages,
                          Transport& transport, std::chrono::milliseconds timeout,
                          const std::atomic<bool>& abort) const {
  const int rep = replica_.at(rank);
  if (rep < 0 || stages.empty()) return;
  torch::NoGradGuard no_grad;
  std::map<int, std::vector<torch::Tensor>> params;
  for (const auto& [s, stage] : stages) params[s] = stage->parameters();
  // Copies the norm leaves out: the second of each tie.
  std::set<std::pair<int, int>> second;
  for (size_t i = 0; i < ties_.size(); ++i) {
    const TiedGradient& t = ties_[i];
    second.insert({t.second_stage, t.second_index});
    const int ra = placement_[t.first_stage].at(rep), rb = placement_[t.second_stage].at(rep);
    if (rank != ra && rank != rb) continue;
    if (ra == rb) {
      // Both copies here: first + second, the order the all-reduce sums in.
      torch::Tensor& a = params.at(t.first_stage).at(t.first_index);
      torch::Tensor& b = params.at(t.second_stage).at(t.second_index);
      const torch::Tensor sum = GradOrZeros(a) + GradOrZeros(b);
      a.mutable_grad() = sum;
      b.mutable_grad() = sum.clone();
      continue;
    }
    const bool first = rank == ra;
    torch::Tensor& p = first ? params.at(t.first_stage).at(t.first_index)
                             : params.at(t.second_stage).at(t.second_index);
    std::vector<torch::Tensor> bucket{GradOrZeros(p).clone()};
    transport.AllReduce(rank, {ra, rb}, CollectiveId(static_cast<int>(i), rep), batch, &bucket,
                        timeout, abort);
    p.mutable_grad() = bucket[0];
  }
  if (clip_norm_ <= 0) return;
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
  const torch::Device device = params.begin()->second.empty()
                                   ? torch::Device(torch::kCPU)
                                   : params.begin()->second[0].device();
  if (!squares.defined()) squares = torch::zeros({1}, torch::TensorOptions(torch::kFloat64).device(device));
  const std::vector<int> group = ModelRanks(placement_, rep);
  if (group.size() > 1) {
    std::vector<torch::Tensor> bucket{squares};
    transport.AllReduce(rank, group, CollectiveId(static_cast<int>(ties_.size()), rep), batch,
                        &bucket, timeout, abort);
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
