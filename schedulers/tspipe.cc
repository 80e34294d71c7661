// TSPipe (Lim et al., ICML 2022): teacher and student pipelined over the same
// stages; the teacher forwards of the *next* mini-batch (batch_offset +1) fill
// the bubbles of the student's forward/backward ("relaxed dependency"), and
// each stage steps its optimizer right after its own backward.
//
// The reference hard-codes one steady-state order per stage and needs
// M = N - 1 micro-batches so that the teacher forwards exactly fill the gap.
// Here the order comes from list scheduling on the expected costs, so any N
// and M work: the action that can start earliest anywhere is placed next
// (ties: backward > loss > student forward > optimizer > teacher forward,
// then the lower rank). Teacher forwards are thus only taken when the
// student's critical path has nothing ready, i.e. they fill bubbles. With a
// frozen teacher the math is exactly sequential KD (the teacher never
// changes); with a momentum teacher the next-batch forward sees target
// version b-1 for batch b+1, TSPipe's one-step-staler update (the
// tspipe_delayed policy; core/update_policy.h checks it).
//
// tspipe_1f1b bounds activation memory as 1F1B does (PipeDream-flush,
// Megatron): the loss runs per micro-batch, backwards take priority, and
// stage s starts a forward only while fewer than min(N, N - s + 1) of its
// micro-batches await their backward, so it stashes at most that many (at
// most N) for any M (declared in Schedule::stash_bound, checked by the
// validator). The next mini-batch's teacher forwards still fill the
// bubbles. One more than plain 1F1B's N - s on stages s >= 1 leaves room
// for the teacher forwards that now share those stages: with N - s the
// steady bubble at N = 4, M = 8 (unit costs) was 0.0588; with this bound it
// equals tspipe's 0.0303 at N = 2, 4 and 8 with M = 2N. Same math as tspipe: per-sample
// or token-mean losses are exact under per-micro-batch losses (the
// executor weights each by its units), so it refuses full-batch losses.
//
// tspipe_zb splits each student backward into I (input gradient: what the
// previous stage waits for) and W (weight gradient, any time before the
// stage's optimizer step), and list-schedules them with priorities I > L >
// F > O > U > W > T: W and the next batch's teacher forwards fill what
// would be bubbles. Being greedy, the list scheduling fills them better in
// one variant or another depending on the costs, so it plans each of
// {per-micro-batch loss (when allowed), whole-batch loss} x {W before T,
// T before W} on the expected costs and keeps the fastest steady state.
// Unit costs (I = W = 1): bubble 0 at N = 4, M = 6 and 0.016 at N = 16,
// M = 15, where tspipe's is 0.111 and 0.333.
#include <algorithm>
#include <limits>
#include <stdexcept>

#include "core/lowering.h"
#include "core/scheduler.h"

namespace tspipe {
namespace {

constexpr double kUnknown = std::numeric_limits<double>::infinity();

enum class Mode { kTSPipe, kOneFOneB, kZeroBubble };

class TSPipeScheduler : public Scheduler {
 public:
  explicit TSPipeScheduler(Mode mode)
      : one_f_one_b_(mode == Mode::kOneFOneB), split_(mode == Mode::kZeroBubble) {}
  Schedule Build(const SchedulerOptions& o) const override {
    const std::string name = one_f_one_b_ ? "tspipe_1f1b" : split_ ? "tspipe_zb" : "tspipe";
    CheckOneStagePerDevice(name, o);
    if (o.workload.local_losses) {
      throw std::invalid_argument(
          name + " pipelines one end-to-end loss; blockwise (local) losses need pipebd");
    }
    if (one_f_one_b_ && o.workload.full_batch_loss) {
      throw std::invalid_argument(
          "tspipe_1f1b computes the loss per micro-batch, but this algorithm's loss needs the "
          "whole mini-batch at once (use tspipe)");
    }
    if (!split_) {
      return Plan(o, name, /*per_mb_loss=*/one_f_one_b_, /*teachers_first=*/false, /*split=*/false);
    }
    // Zero bubble: the list scheduling is greedy, so which of its variants
    // fills the bubbles best depends on the costs. Plan each on the
    // expected costs and keep the fastest in the steady state (ties: the
    // first). Per-micro-batch losses let the last stage start its I before
    // the last forward (when the loss allows them); W before or after the
    // teacher forwards among the fillers; and tspipe's own order with each
    // B as an I and its W at once, so that it is never planned slower
    // than tspipe.
    Schedule best;
    double best_period = kUnknown;
    for (bool per_mb_loss : {true, false}) {
      if (per_mb_loss && o.workload.full_batch_loss) continue;
      for (int variant = 0; variant < 3; ++variant) {
        Schedule s = Plan(o, name, per_mb_loss, /*teachers_first=*/variant == 1,
                          /*split=*/variant < 2);
        // Timed as it will run: with its communication and syncs.
        Schedule lowered = s;
        Lower(&lowered);
        const SteadyState steady = SimulateSteadyState(lowered, o.costs);
        if (!steady.deadlocked && steady.period < best_period) {
          best_period = steady.period;
          best = std::move(s);
        }
      }
    }
    if (best.ranks.empty()) throw std::logic_error(name + " found no schedule that runs");
    return best;
  }

 private:
  // One list scheduling. With `split`, backwards are I + W actions placed
  // separately; without, B, which a zero-bubble scheduler then writes as
  // I and W back to back.
  Schedule Plan(const SchedulerOptions& o, const std::string& name, bool per_mb_loss,
                bool teachers_first, bool split) const {
    const int n = o.num_stages, m = o.num_microbatches, last = n - 1;
    const bool teacher = o.workload.has_teacher();
    const CostModel& c = o.costs;
    const double msg = c.message;

    Schedule s;
    s.num_stages = n;
    s.num_microbatches = m;
    s.workload = o.workload;
    s.ranks.resize(n);
    for (int st = 0; st < n; ++st) s.placement.push_back({st});

    // List-schedule kIterations iterations back to back, as the executor
    // runs them (no barrier: a rank starts iteration i+1 as soon as it has
    // finished its own part of iteration i), and keep the order of a middle
    // iteration: the steady state, free of the first iteration's fill.
    constexpr int kIterations = 4, kTemplate = 2;
    using Times = std::vector<std::vector<double>>;  // [stage][micro-batch]
    std::vector<Times> f_end(kIterations, Times(n, std::vector<double>(m, kUnknown)));
    // b_end: when the gradient w.r.t. the stage's input is known (the end
    // of B, or of I when the backward is split).
    std::vector<Times> t_end = f_end, b_end = f_end;
    // Loss ends per micro-batch (1F1B; tspipe's one whole-batch loss uses
    // entry 0).
    std::vector<std::vector<double>> loss_end(kIterations, std::vector<double>(m, kUnknown));
    struct RankState {
      int iteration = 0;
      int next_f = 0, next_t = 0, next_b = 0, next_l = 0, next_w = 0, done = 0;
      bool loss = false, opt = false, update = false;
      double clock = 0.0;
    };
    std::vector<RankState> rank(n);
    std::vector<int> per_iteration(n);
    for (int st = 0; st < n; ++st) {
      per_iteration[st] = m * ((teacher ? 3 : 2) + (split ? 1 : 0)) + 1 +
                          (st == last ? (per_mb_loss ? m : 1) : 0) +
                          (o.workload.teacher_updates() ? 1 : 0);
      if (one_f_one_b_) s.stash_bound.push_back(Bound(n, st));
    }

    // In priority order. kBackward is B, or I when split; W and the
    // teacher forwards are what fills bubbles.
    enum Kind { kBackward, kLossKind, kForward, kOpt, kUpdate, kWeight, kTeacher, kNone };
    auto priority = [&](Kind k) {
      if (teachers_first && k == kWeight) return static_cast<int>(kTeacher);
      if (teachers_first && k == kTeacher) return static_cast<int>(kWeight);
      return static_cast<int>(k);
    };
    auto candidate = [&](int st, Kind* kind, double* start) {
      *kind = kNone;
      *start = kUnknown;
      const RankState& r = rank[st];
      if (r.iteration >= kIterations) return;
      const int i = r.iteration;
      auto offer = [&](Kind k, double ready) {
        double t = std::max(r.clock, ready);
        // Earliest start wins; equal starts go to the lower Kind value
        // (higher priority).
        if (t < *start || (t == *start && priority(k) < priority(*kind))) {
          *start = t;
          *kind = k;
        }
      };
      // 1F1B: a bounded number of this stage's micro-batches await a
      // backward.
      const bool room = !one_f_one_b_ || r.next_f - r.next_b < Bound(n, st);
      if (r.next_f < m && room) {
        offer(kForward, st == 0 ? 0.0 : f_end[i][st - 1][r.next_f] + msg);
      }
      if (teacher && r.next_t < m) {
        offer(kTeacher, st == 0 ? 0.0 : t_end[i][st - 1][r.next_t] + msg);
      }
      if (per_mb_loss) {
        if (st == last && r.next_l < r.next_f) offer(kLossKind, r.clock);
      } else if (st == last && !r.loss && r.next_f == m) {
        offer(kLossKind, r.clock);
      }
      if (r.next_b < m && r.next_b < r.next_f && (st != last || !per_mb_loss || r.next_b < r.next_l)) {
        offer(kBackward, st == last ? loss_end[i][per_mb_loss ? r.next_b : 0]
                                    : b_end[i][st + 1][r.next_b] + msg);
      }
      if (split && r.next_w < r.next_b) offer(kWeight, r.clock);
      if (!r.opt && r.next_b == m && (!split || r.next_w == m)) offer(kOpt, r.clock);
      // The update of step b waits for every teacher forward of batch b+1 on
      // this stage, so that all of them see the same target version (b-1:
      // the delayed policy) rather than a mix.
      if (o.workload.teacher_updates() && r.opt && !r.update && (!teacher || r.next_t == m)) {
        offer(kUpdate, r.clock);
      }
    };

    std::vector<std::vector<Action>> kept(n);
    while (true) {
      int best_stage = -1;
      Kind best_kind = kNone;
      double best_start = kUnknown;
      for (int st = 0; st < n; ++st) {
        Kind k;
        double t;
        candidate(st, &k, &t);
        if (k != kNone && (best_stage < 0 || t < best_start)) {
          best_stage = st;
          best_kind = k;
          best_start = t;
        }
      }
      if (best_stage < 0) break;
      const int st = best_stage;
      RankState& r = rank[st];
      const int i = r.iteration;
      Action a;
      a.stage = st;
      switch (best_kind) {
        case kForward:
          a.microbatch = r.next_f++;
          a.op = Op::kForward;
          f_end[i][st][a.microbatch] = r.clock = best_start + c.Cost(a);
          break;
        case kTeacher:
          a.microbatch = r.next_t++;
          a.op = Op::kTeacherForward;
          a.batch_offset = 1;
          t_end[i][st][a.microbatch] = r.clock = best_start + c.Cost(a);
          break;
        case kBackward:
          a.microbatch = r.next_b++;
          a.op = split ? Op::kBackwardInput : Op::kBackward;
          b_end[i][st][a.microbatch] = r.clock = best_start + c.Cost(a);
          break;
        case kWeight:
          a.microbatch = r.next_w++;
          a.op = Op::kBackwardWeight;
          r.clock = best_start + c.Cost(a);
          break;
        case kLossKind: {
          a.op = Op::kLoss;
          const int k = per_mb_loss ? r.next_l++ : 0;
          if (per_mb_loss) a.microbatch = k;
          r.loss = !per_mb_loss || r.next_l == m;
          loss_end[i][k] = r.clock = best_start + c.Cost(a);
          break;
        }
        case kOpt:
          a.op = Op::kOptimizerStep;
          r.opt = true;
          r.clock = best_start + c.Cost(a);
          break;
        case kUpdate:
          a.op = Op::kTeacherUpdate;
          r.update = true;
          r.clock = best_start + c.Cost(a);
          break;
        case kNone:
          break;
      }
      if (i == kTemplate) kept[st].push_back(a);
      if (++r.done == per_iteration[st]) {
        double clock = r.clock;
        r = RankState();
        r.iteration = i + 1;
        r.clock = clock;
      }
    }
    for (int st = 0; st < n; ++st) {
      if (static_cast<int>(kept[st].size()) != per_iteration[st]) {
        throw std::logic_error(name + " list scheduling left stage " + std::to_string(st) +
                               " incomplete");
      }
      s.ranks[st] = std::move(kept[st]);
      if (split_ && !split) {
        std::vector<Action> both;
        for (Action a : s.ranks[st]) {
          if (a.op != Op::kBackward) {
            both.push_back(a);
            continue;
          }
          a.op = Op::kBackwardInput;
          both.push_back(a);
          a.op = Op::kBackwardWeight;
          both.push_back(a);
        }
        s.ranks[st] = std::move(both);
      }
    }
    return s;
  }

  // Micro-batches stage `st` of `n` may hold for a backward (1F1B).
  static int Bound(int n, int st) { return std::min(n, n - st + 1); }

  bool one_f_one_b_, split_;
};

TSPIPE_REGISTER_SCHEDULER("tspipe",
                          "TSPipe: teacher forwards of the next mini-batch fill the "
                          "student pipeline's bubbles; per-stage optimizer steps",
                          [] { return std::make_unique<TSPipeScheduler>(Mode::kTSPipe); });
TSPIPE_REGISTER_SCHEDULER("tspipe_1f1b",
                          "TSPipe with 1F1B memory: per-micro-batch losses, backwards first, "
                          "stage s holds at most min(N, N-s+1) micro-batches for any M; "
                          "next-batch teacher forwards fill the bubbles",
                          [] { return std::make_unique<TSPipeScheduler>(Mode::kOneFOneB); });
TSPIPE_REGISTER_SCHEDULER("tspipe_zb",
                          "zero-bubble TSPipe: the student backward split into input-gradient "
                          "(I) and weight-gradient (W) actions; W and next-batch teacher "
                          "forwards fill the bubbles",
                          [] { return std::make_unique<TSPipeScheduler>(Mode::kZeroBubble); });

}  // namespace
}  // namespace tspipe
