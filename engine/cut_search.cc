#include "engine/cut_search.h"

#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "core/balance.h"
#include "core/scheduler.h"
#include "core/simulator.h"

namespace tspipe {
namespace {

// Every way to cut `n` blocks into `parts` non-empty runs.
void Compositions(int n, int parts, std::vector<int>* prefix, std::vector<std::vector<int>>* out) {
  if (parts == 1) {
    prefix->push_back(n);
    out->push_back(*prefix);
    prefix->pop_back();
    return;
  }
  for (int first = 1; first <= n - parts + 1; ++first) {
    prefix->push_back(first);
    Compositions(n - first, parts - 1, prefix, out);
    prefix->pop_back();
  }
}

std::vector<std::vector<int>> Compositions(int n, int parts) {
  std::vector<std::vector<int>> out;
  std::vector<int> prefix;
  if (parts >= 1 && parts <= n) Compositions(n, parts, &prefix, &out);
  return out;
}

// How many cuts of n blocks into `parts` non-empty stages there are,
// C(n-1, parts-1), saturating at `cap` + 1 (52 blocks over 8 stages have 115
// million: enumerating them would exhaust memory).
size_t CompositionCount(int n, int parts, size_t cap) {
  if (parts < 1 || parts > n) return 0;
  const int k = std::min(parts - 1, n - parts);
  double count = 1;
  for (int i = 1; i <= k; ++i) {
    count = count * (n - parts + i) / i;
    if (count > static_cast<double>(cap)) return cap + 1;
  }
  return static_cast<size_t>(count + 0.5);
}

std::vector<double> StageSums(const std::vector<double>& blocks, const std::vector<int>& balance) {
  std::vector<double> out;
  size_t i = 0;
  for (int count : balance) {
    double sum = 0;
    for (int k = 0; k < count; ++k) sum += blocks.at(i++);
    out.push_back(sum);
  }
  return out;
}

}  // namespace

Cut ResolveCut(const CutRule& rule, const std::string& algorithm, int stages, int student_blocks,
               int teacher_blocks, bool has_teacher, const std::vector<int>& balance,
               const std::vector<int>& teacher_balance) {
  Cut cut;
  cut.stages = stages;
  cut.student = balance;
  cut.teacher = teacher_balance;
  if (rule.kind == CutRule::Kind::kOnePerBlock) {
    // Every block pair trains on its own: each is a stage, and the
    // scheduler spreads the stages over the devices.
    cut.stages = student_blocks;
    const std::vector<int> ones(cut.stages, 1);
    for (const auto* given : {&balance, &teacher_balance}) {
      if (!given->empty() && *given != ones) {
        throw std::invalid_argument(
            "algorithm " + algorithm +
            " makes every block a stage; the scheduler chooses the blocks per device, so "
            "--balance/--teacher_balance do not apply (got " + FormatBalance(*given) + ")");
      }
    }
    cut.student = ones;
    cut.teacher = has_teacher ? ones : std::vector<int>{};
  } else if (rule.kind == CutRule::Kind::kShared) {
    const int extra = rule.student_extra_blocks;
    if (cut.student.empty()) {
      // Even over the teacher's blocks; the extra blocks join the last stage.
      cut.student = EvenBalance(student_blocks - extra, stages);
      cut.student.back() += extra;
    }
    if (has_teacher) {
      if (cut.student.back() <= extra) {
        throw std::invalid_argument(
            "balance " + FormatBalance(cut.student) + " leaves the last stage only the " +
            std::to_string(extra) +
            " student-only block(s); the last stage needs at least one more block");
      }
      std::vector<int> follows = cut.student;
      follows.back() -= extra;
      if (!cut.teacher.empty() && cut.teacher != follows) {
        throw std::invalid_argument("algorithm " + algorithm + " cuts its teacher like its student (" +
                                    FormatBalance(follows) + " for student balance " +
                                    FormatBalance(cut.student) + "); --teacher_balance " +
                                    FormatBalance(cut.teacher) + " does not apply");
      }
      cut.teacher = follows;
    }
  } else {
    if (cut.student.empty()) cut.student = EvenBalance(student_blocks, stages);
    if (has_teacher && cut.teacher.empty()) cut.teacher = EvenBalance(teacher_blocks, stages);
  }
  if (static_cast<int>(cut.student.size()) != cut.stages) {
    throw std::invalid_argument("balance " + FormatBalance(cut.student) + " has " +
                                std::to_string(cut.student.size()) + " entries for " +
                                std::to_string(cut.stages) + " stages");
  }
  if (has_teacher && static_cast<int>(cut.teacher.size()) != cut.stages) {
    throw std::invalid_argument("teacher balance " + FormatBalance(cut.teacher) + " has " +
                                std::to_string(cut.teacher.size()) + " entries for " +
                                std::to_string(cut.stages) + " stages");
  }
  if (!has_teacher) cut.teacher.clear();
  return cut;
}

int DevicesFor(const std::string& scheduler, const CutRule& rule, int stages) {
  if (rule.kind != CutRule::Kind::kOnePerBlock) return 0;
  return SchedulerRegistry::Global().Create(scheduler)->RunsOnOneDevice() ? 0 : stages;
}

BalancePlan PlanFor(const CutSearch& search, const BlockCosts& costs,
                    const std::vector<int>& student, const std::vector<int>& teacher) {
  BalancePlan plan;
  plan.student = student;
  plan.teacher = teacher;
  plan.forward_ms = StageSums(costs.student_forward, student);
  plan.backward_ms = StageSums(costs.student_backward, student);
  if (!teacher.empty()) plan.teacher_ms = StageSums(costs.teacher_forward, teacher);
  CostModel m;
  m.all_reduce = search.all_reduce_ms;
  m.teacher_update = search.teacher_update_ms;
  m.forward_per_stage = plan.forward_ms;
  m.backward_per_stage = plan.backward_ms;
  m.teacher_forward_per_stage = plan.teacher_ms;
  SchedulerOptions so;
  so.num_stages = static_cast<int>(student.size());
  so.num_devices = DevicesFor(search.scheduler, search.rule, search.stages);
  so.num_microbatches = search.microbatches;
  so.workload = search.workload;
  so.costs = m;
  Schedule schedule = BuildSchedule(search.scheduler, so);
  if (search.models > 1) schedule = ReplicateModels(schedule, search.models);
  plan.period_ms = SimulateSteadyState(schedule, m).period;
  return plan;
}

std::vector<BalancePlan> PlanBalances(const CutSearch& c, const BlockCosts& costs, int max_plans,
                                      double tolerance) {
  if (c.rule.kind == CutRule::Kind::kOnePerBlock) {
    // Nothing to cut: a stage per block. The measured block costs let the
    // scheduler place the blocks (pipebd's split by cost).
    const Cut cut = ResolveCut(c.rule, "", c.stages, static_cast<int>(costs.student_forward.size()),
                               static_cast<int>(costs.teacher_forward.size()),
                               c.workload.has_teacher(), {}, {});
    BalancePlan p = PlanFor(c, costs, cut.student, cut.teacher);
    p.even_period_ms = p.period_ms;
    return {p};
  }
  const bool shared = c.rule.kind == CutRule::Kind::kShared;
  const int extra = c.rule.student_extra_blocks;
  const bool teacher = c.workload.has_teacher();
  // Candidates: shared cuts are one cut for both (the student's last stage
  // holding the extra blocks); otherwise every student cut with every
  // teacher cut.
  const int units = shared ? static_cast<int>(costs.student_forward.size()) - extra
                           : static_cast<int>(costs.student_forward.size());
  // The even cut, as a run without a balance gets it (this also checks the
  // stage count, with the message an explicit balance gets).
  const Cut even_cut =
      ResolveCut(c.rule, "", c.stages, static_cast<int>(costs.student_forward.size()),
                 static_cast<int>(costs.teacher_forward.size()), teacher, {}, {});
  std::vector<std::pair<std::vector<int>, std::vector<int>>> candidates;
  auto add = [&](std::vector<int> s, std::vector<int> t) {
    if (shared) {
      t = teacher ? s : std::vector<int>{};
      s.back() += extra;
    }
    candidates.emplace_back(std::move(s), std::move(t));
  };
  constexpr size_t kMaxCandidates = 20000;
  const size_t student_count = CompositionCount(units, c.stages, kMaxCandidates);
  const size_t teacher_count =
      teacher && !shared && c.teacher_cut.empty()
          ? CompositionCount(static_cast<int>(costs.teacher_forward.size()), c.stages,
                             kMaxCandidates)
          : 1;
  // Only as many as will be simulated are enumerated.
  if (student_count * teacher_count <= kMaxCandidates) {
    const std::vector<std::vector<int>> student_cuts = Compositions(units, c.stages);
    if (teacher && !shared) {
      // A teacher cut given by the caller stays; only the student's is chosen.
      const std::vector<std::vector<int>> teacher_cuts =
          c.teacher_cut.empty()
              ? Compositions(static_cast<int>(costs.teacher_forward.size()), c.stages)
              : std::vector<std::vector<int>>{c.teacher_cut};
      for (const auto& s : student_cuts) {
        for (const auto& t : teacher_cuts) add(s, t);
      }
    } else {
      for (const auto& s : student_cuts) add(s, {});
    }
  }
  if (candidates.empty()) {
    // Too many to simulate: the cut that balances total work per stage, or
    // the even cut.
    std::vector<double> total(costs.student_forward.size());
    for (size_t i = 0; i < total.size(); ++i) {
      total[i] = costs.student_forward[i] + costs.student_backward[i];
    }
    if (shared) {
      std::vector<double> u(units);
      for (int i = 0; i < units; ++i) {
        u[i] = total[i] + (teacher ? costs.teacher_forward[i] : 0.0);
      }
      for (int i = units; i < static_cast<int>(total.size()); ++i) u.back() += total[i];
      add(SolveBalance(u, {}, c.stages).student, {});
    } else {
      BalanceResult r = SolveBalance(total, teacher ? costs.teacher_forward : std::vector<double>{},
                                     c.stages);
      add(r.student, teacher && !c.teacher_cut.empty() ? c.teacher_cut : r.teacher);
    }
    // Balancing each network's work alone ignores how the scheduler
    // overlaps them; the even cut is simulated too, and the faster kept.
    candidates.emplace_back(even_cut.student,
                            teacher && !c.teacher_cut.empty() ? c.teacher_cut : even_cut.teacher);
  }
  std::vector<BalancePlan> plans;
  for (const auto& [s, t] : candidates) plans.push_back(PlanFor(c, costs, s, t));
  // Fastest first; equal periods keep enumeration order (deterministic).
  std::stable_sort(plans.begin(), plans.end(), [](const BalancePlan& a, const BalancePlan& b) {
    return a.period_ms < b.period_ms;
  });
  const double even = PlanFor(c, costs, even_cut.student, even_cut.teacher).period_ms;
  std::vector<BalancePlan> out;
  for (BalancePlan& p : plans) {
    if (static_cast<int>(out.size()) >= std::max(1, max_plans)) break;
    if (!out.empty() && p.period_ms > out.front().period_ms * (1 + tolerance)) break;
    p.even_period_ms = even;
    out.push_back(std::move(p));
  }
  return out;
}

std::string DescribePlan(const BalancePlan& plan) {
  std::ostringstream out;
  out.precision(4);
  out << "student " << FormatBalance(plan.student);
  if (!plan.teacher.empty()) out << ", teacher " << FormatBalance(plan.teacher);
  out << "; simulated " << plan.period_ms << " ms/iteration (even cut: " << plan.even_period_ms
      << ")";
  return out.str();
}

}  // namespace tspipe
