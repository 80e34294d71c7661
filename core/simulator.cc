#include "core/simulator.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <sstream>
#include <tuple>

#include "core/lowering.h"
#include "core/message.h"

namespace tspipe {

double CostModel::Cost(const Action& a) const {
  auto pick = [&](const std::vector<double>& per_stage, double scalar) {
    return a.stage < static_cast<int>(per_stage.size()) ? per_stage[a.stage] : scalar;
  };
  switch (a.op) {
    case Op::kForward: return pick(forward_per_stage, forward);
    case Op::kTeacherForward: return pick(teacher_forward_per_stage, teacher_forward);
    case Op::kBackward: return pick(backward_per_stage, backward);
    case Op::kBackwardInput:
    case Op::kBackwardWeight: {
      const bool input = a.op == Op::kBackwardInput;
      const std::vector<double>& v = input ? backward_input_per_stage : backward_weight_per_stage;
      const double scalar = input ? backward_input : backward_weight;
      if (a.stage < static_cast<int>(v.size())) return v[a.stage];
      if (scalar >= 0) return scalar;
      // Stage 0's input is data: its I computes nothing and its W is the
      // whole backward (backends/split_backward).
      const double whole = pick(backward_per_stage, backward);
      if (a.stage == 0) return input ? 0.0 : whole;
      return 0.5 * whole;
    }
    case Op::kLoss: return loss;
    case Op::kOptimizerStep: return optimizer_step;
    case Op::kTeacherUpdate: return teacher_update;
    case Op::kAllReduceGradients: return all_reduce;
    case Op::kSumTiedGradients:
    case Op::kClipGradients: return gradient_sync;
    default: return 0.0;
  }
}

double SimulationResult::BubbleFraction() const {
  if (makespan <= 0 || busy.empty()) return 0.0;
  double total = 0;
  for (double b : busy) total += b;
  return 1.0 - total / (makespan * busy.size());
}

double SimulationResult::Utilisation(int rank) const {
  return makespan > 0 ? busy[rank] / makespan : 0.0;
}

SimulationResult Simulate(const Schedule& s, const CostModel& costs) {
  const int n = s.num_ranks();
  SimulationResult result;
  result.busy.assign(n, 0.0);
  result.timings.resize(n);
  for (int r = 0; r < n; ++r) result.timings[r].resize(s.ranks[r].size());
  std::vector<size_t> pc(n, 0);
  std::vector<double> clock(n, 0.0);
  std::map<Message, double> arrived;  // message -> arrival time
  // A collective by (what it is, its group, which occurrence): when each
  // member joined it and, once all have, when it ends.
  struct Collective {
    std::map<int, double> joined;
    double end = -1;
  };
  using Instance = std::tuple<CollectiveId, std::vector<int>, int>;
  std::map<Instance, Collective> collective;
  // Per rank: how often it has joined each (collective, group) so far.
  std::vector<std::map<std::pair<CollectiveId, std::vector<int>>, int>> joins(n);
  // Per rank, stage and batch offset (iteration, when unrolled): optimizer
  // steps taken.
  std::vector<std::map<std::pair<int, int>, int>> stepped(n);
  // Joins `r` to the collective `a` names over `group`; returns it.
  auto join = [&](int r, const Action& a, std::vector<int> group) -> Collective& {
    std::sort(group.begin(), group.end());
    const CollectiveId id = CollectiveOf(a, 0);
    const int k = joins[r][{id, group}]++;
    Collective& c = collective[{id, group, k}];
    c.joined[r] = clock[r];
    if (c.joined.size() == group.size()) {
      double start = 0;
      for (const auto& [m, time] : c.joined) start = std::max(start, time);
      c.end = start + costs.Cost(a);
    }
    return c;
  };
  // The k-th all-reduce of `stage` in the iteration `offset` names, which
  // the stage's k-th optimizer step there waits for.
  auto gradients = [&](int stage, int offset, int k) -> const Collective* {
    const Action ar{stage, kAllMicrobatches, Op::kAllReduceGradients, offset};
    std::vector<int> group = s.placement[stage];
    std::sort(group.begin(), group.end());
    auto it = collective.find({CollectiveOf(ar, 0), group, k});
    return it == collective.end() ? nullptr : &it->second;
  };
  // Pending blocking collectives: a rank waits at one until every member
  // has joined (it joins once).
  std::vector<bool> waiting(n, false);

  bool progress = true;
  while (progress) {
    progress = false;
    for (int r = 0; r < n; ++r) {
      while (pc[r] < s.ranks[r].size()) {
        const Action& a = s.ranks[r][pc[r]];
        ActionTiming& t = result.timings[r][pc[r]];
        if (IsSend(a.op)) {
          t.start = t.end = clock[r];
          arrived[MessageOf(a, r, 0)] = clock[r] + costs.message;
        } else if (IsCommunication(a.op)) {
          auto it = arrived.find(MessageOf(a, r, 0));
          if (it == arrived.end()) break;
          t.start = clock[r];
          t.end = clock[r] = std::max(clock[r], it->second);
        } else if (a.op == Op::kAllReduceGradients) {
          // As the executor runs it: the collective starts once every
          // replica has started it and travels while each goes on
          // computing; only the stage's optimizer step waits for it.
          join(r, a, s.placement[a.stage]);
          t.start = t.end = clock[r];
        } else if (a.op == Op::kSumTiedGradients || a.op == Op::kClipGradients) {
          // Blocking: the rank goes on once every member has joined.
          std::vector<int> group;
          if (a.op == Op::kClipGradients) {
            group = ReplicaRanks(s, s.ReplicaIndex(a.stage, r));
          } else {
            group = {r};
            if (a.peer != kNoPeer) group.push_back(a.peer);
          }
          if (!waiting[r]) {
            // As the executor, which first waits for every all-reduce the
            // rank started in this iteration (FinalGradients).
            double ready = clock[r];
            bool reduced = true;
            for (int st : s.StagesOnRank(r)) {
              if (s.placement[st].size() < 2 || s.workload.independent_replicas) continue;
              const Collective* sums = gradients(st, a.batch_offset, 0);
              if (sums == nullptr || sums->end < 0) {
                reduced = false;
                break;
              }
              ready = std::max(ready, sums->end);
            }
            if (!reduced) break;
            t.start = clock[r];
            clock[r] = ready;
            join(r, a, group);
            waiting[r] = true;
          }
          std::sort(group.begin(), group.end());
          const Collective& c =
              collective[{CollectiveOf(a, 0), group, joins[r][{CollectiveOf(a, 0), group}] - 1}];
          if (c.end < 0) break;  // Not every member there yet.
          waiting[r] = false;
          t.end = clock[r] = std::max(clock[r], c.end);
        } else if (a.op == Op::kOptimizerStep && s.placement[a.stage].size() > 1 &&
                   !s.workload.independent_replicas) {
          int& k = stepped[r][{a.stage, a.batch_offset}];
          const Collective* sums = gradients(a.stage, a.batch_offset, k);
          if (sums == nullptr || sums->end < 0) break;  // Not every replica there.
          ++k;
          double c = costs.Cost(a);
          t.start = std::max(clock[r], sums->end);
          t.end = clock[r] = t.start + c;
          result.busy[r] += c;
        } else {
          double c = costs.Cost(a);
          t.start = clock[r];
          t.end = clock[r] = clock[r] + c;
          result.busy[r] += c;
        }
        ++pc[r];
        progress = true;
      }
    }
  }
  std::ostringstream report;
  for (int r = 0; r < n; ++r) {
    if (pc[r] < s.ranks[r].size()) {
      result.deadlocked = true;
      const Action& a = s.ranks[r][pc[r]];
      report << "rank " << r << " blocked at step " << pc[r] << " on "
             << ToString(a)
             << (a.op == Op::kOptimizerStep
                     ? " (not every replica of the stage starts its gradient all-reduce)"
                 : IsCollective(a.op) ? " (not every member of the collective reaches it)"
                                      : " (its matching send never runs)")
             << "\n";
    }
    result.makespan = std::max(result.makespan, clock[r]);
  }
  result.deadlock_report = report.str();
  return result;
}

Schedule Unroll(const Schedule& s, int iterations) {
  Schedule u = s;
  for (int r = 0; r < s.num_ranks(); ++r) {
    u.ranks[r].clear();
    for (int i = 0; i < iterations; ++i) {
      for (Action a : s.ranks[r]) {
        a.batch_offset += i;
        u.ranks[r].push_back(a);
      }
    }
  }
  return u;
}

SteadyState SimulateSteadyState(const Schedule& s, const CostModel& costs) {
  // The period is the slope of makespan over iteration count, measured far
  // enough from the start that the fill no longer matters.
  constexpr int kShort = 6, kLong = 12;
  SimulationResult a = Simulate(Unroll(s, kShort), costs);
  SimulationResult b = Simulate(Unroll(s, kLong), costs);
  SteadyState out;
  if (a.deadlocked || b.deadlocked) {
    out.deadlocked = true;
    return out;
  }
  out.period = (b.makespan - a.makespan) / (kLong - kShort);
  double busy = 0;
  for (int r = 0; r < s.num_ranks(); ++r) busy += (b.busy[r] - a.busy[r]) / (kLong - kShort);
  out.bubble_fraction = out.period > 0 ? 1.0 - busy / (out.period * s.num_ranks()) : 0.0;
  return out;
}

StashPeaks PeakStashes(const Schedule& s) {
  StashPeaks peaks;
  peaks.student.assign(s.num_stages, 0);
  peaks.teacher.assign(s.num_stages, 0);
  peaks.weight.assign(s.num_stages, 0);
  std::vector<bool> loss_stage(s.num_stages, false);
  for (const auto& list : s.ranks) {
    for (const Action& a : list) {
      if (a.op == Op::kLoss) loss_stage[a.stage] = true;
    }
  }
  for (int rank = 0; rank < s.num_ranks(); ++rank) {
    std::vector<int> student(s.num_stages, 0), teacher(s.num_stages, 0),
        weight(s.num_stages, 0);
    auto note = [&](int stage) {
      peaks.student[stage] = std::max(peaks.student[stage], student[stage]);
      peaks.teacher[stage] = std::max(peaks.teacher[stage], teacher[stage]);
      peaks.weight[stage] = std::max(peaks.weight[stage], weight[stage]);
    };
    // The steady state: what the previous iteration ran ahead for this one.
    for (const Action& a : s.ranks[rank]) {
      if (a.op == Op::kTeacherForward && a.batch_offset > 0 && loss_stage[a.stage]) {
        ++teacher[a.stage];
      }
    }
    for (int stage : s.StagesOnRank(rank)) note(stage);
    for (const Action& a : s.ranks[rank]) {
      switch (a.op) {
        case Op::kForward:
          ++student[a.stage];
          break;
        case Op::kBackward:
          --student[a.stage];
          break;
        case Op::kBackwardInput:
          ++weight[a.stage];
          break;
        case Op::kBackwardWeight:
          --student[a.stage];
          --weight[a.stage];
          break;
        case Op::kTeacherForward:
          if (loss_stage[a.stage]) ++teacher[a.stage];
          break;
        case Op::kLoss:
          if (s.workload.has_teacher()) {
            const int used = a.microbatch == kAllMicrobatches
                                 ? static_cast<int>(s.MicrobatchesOf(a.stage, rank).size())
                                 : 1;
            teacher[a.stage] = std::max(0, teacher[a.stage] - used);
          }
          break;
        default:
          continue;
      }
      note(a.stage);
    }
  }
  return peaks;
}

std::vector<double> StashBytes(const StashPeaks& peaks, const std::vector<double>& student_bytes,
                               const std::vector<double>& teacher_bytes) {
  std::vector<double> out(peaks.student.size(), 0.0);
  for (size_t s = 0; s < out.size(); ++s) {
    if (s < student_bytes.size()) out[s] += peaks.student[s] * student_bytes[s];
    if (s < teacher_bytes.size() && s < peaks.teacher.size()) {
      out[s] += peaks.teacher[s] * teacher_bytes[s];
    }
  }
  return out;
}

std::string FormatStats(const Schedule& s, const SimulationResult& r, const CostModel& costs,
                        const std::vector<double>& student_bytes,
                        const std::vector<double>& teacher_bytes) {
  std::ostringstream out;
  char buf[64];
  out << "scheduler=" << s.scheduler << "\n";
  out << "stages=" << s.num_stages << "\n";
  out << "microbatches=" << s.num_microbatches << "\n";
  out << "ranks=" << s.num_ranks() << "\n";
  if (r.deadlocked) {
    out << "deadlock=true\n" << r.deadlock_report;
    return out.str();
  }
  std::snprintf(buf, sizeof(buf), "%.6g", r.makespan);
  out << "makespan=" << buf << "\n";
  std::snprintf(buf, sizeof(buf), "%.6f", r.BubbleFraction());
  out << "bubble_fraction=" << buf << "\n";
  SteadyState steady = SimulateSteadyState(s, costs);
  if (!steady.deadlocked) {
    std::snprintf(buf, sizeof(buf), "%.6f", steady.bubble_fraction);
    out << "steady_bubble_fraction=" << buf << "\n";
    std::snprintf(buf, sizeof(buf), "%.6g", steady.period);
    out << "steady_period=" << buf << "\n";
  }
  for (int rank = 0; rank < s.num_ranks(); ++rank) {
    std::snprintf(buf, sizeof(buf), "%.6f", r.Utilisation(rank));
    out << "utilisation_rank" << rank << "=" << buf << "\n";
  }
  const StashPeaks stash = PeakStashes(s);
  for (int stage = 0; stage < s.num_stages; ++stage) {
    out << "stash_peak_stage" << stage << "=" << stash.student[stage] << "+"
        << stash.teacher[stage] << "\n";
  }
  // Any I leaves its micro-batch awaiting a W, so a split schedule has a
  // weight peak of at least 1.
  if (std::any_of(stash.weight.begin(), stash.weight.end(), [](int n) { return n > 0; })) {
    for (int stage = 0; stage < s.num_stages; ++stage) {
      out << "weight_stash_peak_stage" << stage << "=" << stash.weight[stage] << "\n";
    }
  }
  if (!student_bytes.empty() || !teacher_bytes.empty()) {
    const std::vector<double> bytes = StashBytes(stash, student_bytes, teacher_bytes);
    for (int stage = 0; stage < s.num_stages; ++stage) {
      std::snprintf(buf, sizeof(buf), "%.0f", bytes[stage]);
      out << "stash_bytes_stage" << stage << "=" << buf << "\n";
    }
  }
  return out.str();
}

}  // namespace tspipe
