#include "core/validator.h"

#include <algorithm>
#include <map>
#include <sstream>
#include <tuple>

#include "core/simulator.h"
#include "core/validator_cross_rank.h"

namespace tspipe {

std::string ValidationResult::ToString() const {
  std::string out;
  for (const std::string& e : errors) out += e + "\n";
  return out;
}

namespace {

// An action without its peer: what the schedule asks for.
using Key = std::tuple<int, int, Op, int>;  // stage, mb, op, offset

Key KeyOf(const Action& a) { return {a.stage, a.microbatch, a.op, a.batch_offset}; }

std::string Name(int stage, int mb, Op op, int offset = 0) {
  Action a;
  a.stage = stage;
  a.microbatch = mb;
  a.op = op;
  a.batch_offset = offset;
  return ToString(a);
}

class Checker {
 public:
  explicit Checker(const Schedule& s) : s_(s) {}

  ValidationResult Run() {
    if (!CheckStructure()) return std::move(result_);
    IndexPositions();
    CheckCounts();
    CheckGradientSync(s_, &result_.errors);
    CheckOrder();
    CheckPairing(s_, &result_.errors);
    if (result_.ok()) {
      const std::string order = CheckMessageOrder(s_);
      if (!order.empty()) Error("messages posted out of order (NCCL matches in posting order): " + order);
    }
    if (result_.ok()) {
      CostModel unit;
      SimulationResult sim = Simulate(s_, unit);
      if (sim.deadlocked) Error("deadlock:\n" + sim.deadlock_report);
      // What runs once before the first iteration must complete too.
      SimulationResult prologue = Simulate(TeacherPrologue(s_), unit);
      if (prologue.deadlocked) Error("deadlock in the teacher prologue:\n" + prologue.deadlock_report);
    }
    if (result_.ok()) CheckStashBound();
    return std::move(result_);
  }

 private:
  void Error(const std::string& e) { result_.errors.push_back(e); }

  void CheckStashBound() {
    if (s_.stash_bound.empty()) return;
    if (static_cast<int>(s_.stash_bound.size()) != s_.num_stages) {
      Error("stash bound covers " + std::to_string(s_.stash_bound.size()) +
            " stages, schedule has " + std::to_string(s_.num_stages));
      return;
    }
    const StashPeaks peaks = PeakStashes(s_);
    for (int st = 0; st < s_.num_stages; ++st) {
      if (peaks.student[st] > s_.stash_bound[st]) {
        Error("stage " + std::to_string(st) + " holds " + std::to_string(peaks.student[st]) +
              " micro-batches awaiting their backward, over its declared bound of " +
              std::to_string(s_.stash_bound[st]));
      }
    }
  }

  bool CheckStructure() {
    if (s_.num_stages <= 0) Error("schedule has no stages");
    if (s_.num_microbatches <= 0) Error("schedule has no micro-batches");
    if (s_.workload.blockwise && !(s_.workload.has_teacher() && s_.workload.local_losses)) {
      Error("a blockwise workload needs a teacher and local losses");
    }
    if (s_.workload.independent_replicas && !s_.workload.teacher_updates()) {
      Error("independent replicas (models teaching each other) need a teacher and teacher "
            "updates (the exchanges)");
    }
    for (const auto& [a, b] : s_.workload.tied_stages) {
      if (a < 0 || b < 0 || a >= s_.num_stages || b >= s_.num_stages) {
        Error("a tied parameter names stages " + std::to_string(a) + " and " +
              std::to_string(b) + " of " + std::to_string(s_.num_stages));
      }
    }
    if (static_cast<int>(s_.placement.size()) != s_.num_stages) {
      Error("placement covers " + std::to_string(s_.placement.size()) +
            " stages, schedule has " + std::to_string(s_.num_stages));
    }
    for (int st = 0; st < static_cast<int>(s_.placement.size()); ++st) {
      if (s_.placement[st].empty()) Error("stage " + std::to_string(st) + " is placed on no rank");
      for (int r : s_.placement[st]) {
        if (r < 0 || r >= s_.num_ranks()) {
          Error("stage " + std::to_string(st) + " placed on rank " + std::to_string(r) +
                ", but the schedule has " + std::to_string(s_.num_ranks()) + " ranks");
        }
      }
    }
    if (!result_.ok()) return false;
    for (int r = 0; r < s_.num_ranks(); ++r) {
      for (size_t i = 0; i < s_.ranks[r].size(); ++i) {
        const Action& a = s_.ranks[r][i];
        std::string where = "rank " + std::to_string(r) + ": " + ToString(a) +
                            " at step " + std::to_string(i);
        if (a.stage < 0 || a.stage >= s_.num_stages) {
          Error(where + " names stage " + std::to_string(a.stage) + " of " +
                std::to_string(s_.num_stages));
          continue;
        }
        if (s_.ReplicaIndex(a.stage, r) < 0) {
          Error(where + ": stage " + std::to_string(a.stage) + " is not placed on this rank");
        }
        if (a.microbatch < kAllMicrobatches || a.microbatch >= s_.num_microbatches) {
          Error(where + " names micro-batch " + std::to_string(a.microbatch) + " of " +
                std::to_string(s_.num_microbatches));
        }
        bool per_mb = a.op == Op::kForward || a.op == Op::kTeacherForward ||
                      a.op == Op::kBackward || a.op == Op::kBackwardInput ||
                      a.op == Op::kBackwardWeight || IsCommunication(a.op);
        if (per_mb && a.microbatch == kAllMicrobatches) {
          Error(where + " needs a micro-batch index");
        }
        const bool tied = a.op == Op::kSumTiedGradients;
        if ((IsCommunication(a.op) || (tied && a.peer != kNoPeer)) &&
            (a.peer < 0 || a.peer >= s_.num_ranks() || a.peer == r)) {
          Error(where + " has invalid peer rank " + std::to_string(a.peer));
        }
        if (!IsCommunication(a.op) && !tied && a.peer != kNoPeer) {
          Error(where + " has a peer, but only sends, receives and TG have one");
        }
        if ((a.op == Op::kOptimizerStep || a.op == Op::kTeacherUpdate || IsCollective(a.op)) &&
            a.microbatch != kAllMicrobatches) {
          Error(where + " is per mini-batch and takes no micro-batch index");
        }
      }
    }
    return result_.ok();
  }

  // pos_[rank][key] = first step of that action on that rank; duplicates are
  // reported here.
  void IndexPositions() {
    pos_.resize(s_.num_ranks());
    for (int r = 0; r < s_.num_ranks(); ++r) {
      std::map<std::tuple<int, int, Op, int, int>, size_t> seen;
      for (size_t i = 0; i < s_.ranks[r].size(); ++i) {
        const Action& a = s_.ranks[r][i];
        auto full = std::make_tuple(a.stage, a.microbatch, a.op, a.batch_offset, a.peer);
        auto [it, inserted] = seen.emplace(full, i);
        if (!inserted) {
          Error("duplicate action " + ToString(a) + " on rank " + std::to_string(r) +
                " (steps " + std::to_string(it->second) + " and " + std::to_string(i) + ")");
          continue;
        }
        pos_[r].emplace(KeyOf(a), i);
      }
    }
  }

  bool IsLossStage(int stage) const {
    return s_.workload.local_losses || stage == s_.num_stages - 1;
  }

  // Number of ranks running an action matching (stage, mb, op), any offset.
  int CountAnyOffset(int stage, int mb, Op op, int* rank_out = nullptr) const {
    int count = 0;
    for (int r = 0; r < s_.num_ranks(); ++r) {
      for (const auto& [key, step] : pos_[r]) {
        if (std::get<0>(key) == stage && std::get<1>(key) == mb && std::get<2>(key) == op) {
          ++count;
          if (rank_out) *rank_out = r;
        }
      }
    }
    return count;
  }

  void ExpectOnce(int stage, int mb, Op op) {
    int n = CountAnyOffset(stage, mb, op);
    if (n == 0) {
      Error("missing action " + Name(stage, mb, op) + ": no rank runs it");
    } else if (n > 1) {
      Error("duplicate action " + Name(stage, mb, op) + ": " + std::to_string(n) +
            " ranks run it");
    }
  }

  // One B, or one I and one W (the split backward), never both forms.
  void ExpectBackward(int stage, int mb) {
    const int whole = CountAnyOffset(stage, mb, Op::kBackward);
    const int input = CountAnyOffset(stage, mb, Op::kBackwardInput);
    const int weight = CountAnyOffset(stage, mb, Op::kBackwardWeight);
    if (input == 0 && weight == 0) {
      ExpectOnce(stage, mb, Op::kBackward);
      return;
    }
    if (whole > 0) {
      Error("micro-batch " + std::to_string(mb) + " of stage " + std::to_string(stage) +
            " has both a whole backward " + Name(stage, mb, Op::kBackward) +
            " and a split one (I/W)");
      return;
    }
    ExpectOnce(stage, mb, Op::kBackwardInput);
    ExpectOnce(stage, mb, Op::kBackwardWeight);
  }

  // The action that ends (st, mb)'s backward on rank r: its W when the
  // backward is split there, else its B.
  Key BackwardEnd(int r, int st, int mb, int off) const {
    const Key weight{st, mb, Op::kBackwardWeight, off};
    return Pos(r, weight) >= 0 ? weight : Key{st, mb, Op::kBackward, off};
  }
  // Likewise the action that gives the input gradient: I or B.
  Key InputGradient(int r, int st, int mb, int off) const {
    const Key input{st, mb, Op::kBackwardInput, off};
    return Pos(r, input) >= 0 ? input : Key{st, mb, Op::kBackward, off};
  }

  void CheckCounts() {
    const Workload& w = s_.workload;
    for (int st = 0; st < s_.num_stages; ++st) {
      for (int mb = 0; mb < s_.num_microbatches; ++mb) {
        ExpectOnce(st, mb, Op::kForward);
        ExpectBackward(st, mb);
        if (w.has_teacher()) ExpectOnce(st, mb, Op::kTeacherForward);
        if (IsLossStage(st)) {
          // Covered by exactly one L: per micro-batch, or a whole-batch L on
          // the rank that ran the forward.
          int per_mb = CountAnyOffset(st, mb, Op::kLoss);
          int fwd_rank = -1;
          CountAnyOffset(st, mb, Op::kForward, &fwd_rank);
          int whole = fwd_rank >= 0 && pos_[fwd_rank].count({st, kAllMicrobatches, Op::kLoss, 0})
                          ? 1 : 0;
          if (per_mb + whole == 0) {
            Error("missing action " + Name(st, kAllMicrobatches, Op::kLoss) +
                  ": micro-batch " + std::to_string(mb) + " of stage " +
                  std::to_string(st) + " reaches no loss");
          } else if (per_mb + whole > 1) {
            Error("duplicate loss for micro-batch " + std::to_string(mb) + " of stage " +
                  std::to_string(st));
          }
        }
        if (!w.has_teacher() && CountAnyOffset(st, mb, Op::kTeacherForward) > 0) {
          Error("unexpected action " + Name(st, mb, Op::kTeacherForward) +
                ": the workload has no teacher");
        }
      }
      if (!IsLossStage(st)) {
        for (int mb = kAllMicrobatches; mb < s_.num_microbatches; ++mb) {
          if (CountAnyOffset(st, mb, Op::kLoss) > 0) {
            Error("unexpected action " + Name(st, mb, Op::kLoss) + ": stage " +
                  std::to_string(st) + " has no loss");
          }
        }
      }
      for (int r : s_.placement[st]) {
        auto once_per_replica = [&](Op op, bool expected) {
          bool has = pos_[r].count({st, kAllMicrobatches, op, 0}) > 0;
          if (expected && !has) {
            Error("missing action " + Name(st, kAllMicrobatches, op) + " on rank " +
                  std::to_string(r));
          }
          if (!expected && has) {
            Error("unexpected action " + Name(st, kAllMicrobatches, op) + " on rank " +
                  std::to_string(r));
          }
        };
        once_per_replica(Op::kOptimizerStep, true);
        once_per_replica(Op::kTeacherUpdate, w.teacher_updates());
        // Replicas of one model sum their gradients; separate models do not.
        once_per_replica(Op::kAllReduceGradients,
                         s_.placement[st].size() > 1 && !w.independent_replicas);
      }
    }
  }

  // Steps of the rank's TG and GN actions.
  std::vector<long> SyncSteps(int r) const {
    std::vector<long> out;
    for (size_t i = 0; i < s_.ranks[r].size(); ++i) {
      const Op op = s_.ranks[r][i].op;
      if (op == Op::kSumTiedGradients || op == Op::kClipGradients) out.push_back(static_cast<long>(i));
    }
    return out;
  }

  // Step of `key` on `rank`, or -1.
  long Pos(int rank, const Key& key) const {
    auto it = pos_[rank].find(key);
    return it == pos_[rank].end() ? -1 : static_cast<long>(it->second);
  }

  void CheckOrder() {
    const int last = s_.num_stages - 1;
    for (int r = 0; r < s_.num_ranks(); ++r) {
      for (size_t i = 0; i < s_.ranks[r].size(); ++i) {
        const Action& a = s_.ranks[r][i];
        const long step = static_cast<long>(i);
        std::string where = "rank " + std::to_string(r) + ": " + ToString(a) +
                            " at step " + std::to_string(i);
        auto must_follow = [&](const Key& before, const std::string& what) {
          long p = Pos(r, before);
          if (p < 0 || p > step) {
            Error(where + " runs before " + what + " " +
                  Name(std::get<0>(before), std::get<1>(before), std::get<2>(before),
                       std::get<3>(before)));
            return false;
          }
          return true;
        };
        auto any_before = [&](std::initializer_list<Key> keys) {
          for (const Key& k : keys) {
            long p = Pos(r, k);
            if (p >= 0 && p < step) return true;
          }
          return false;
        };
        const int mb = a.microbatch, off = a.batch_offset, st = a.stage;
        switch (a.op) {
          case Op::kForward:
          case Op::kTeacherForward: {
            if (a.op == Op::kForward && s_.workload.blockwise) {
              // The stage's teacher forward hands the student its input.
              must_follow({st, mb, Op::kTeacherForward, off}, "the teacher forward");
              break;
            }
            if (st == 0) break;
            Op recv = a.op == Op::kForward ? Op::kRecvActivation : Op::kRecvTeacherActivation;
            if (!any_before({{st - 1, mb, a.op, off}, {st, mb, recv, off}})) {
              Error(where + " runs before its input arrives (no earlier " +
                    Name(st - 1, mb, a.op, off) + " or " + OpName(recv).data() +
                    " on this rank)");
            }
            break;
          }
          case Op::kBackwardWeight:
            must_follow({st, mb, Op::kBackwardInput, off}, "its input-gradient action");
            break;
          case Op::kBackward:
          case Op::kBackwardInput: {
            if (!must_follow({st, mb, Op::kForward, off}, "its forward")) break;
            bool loss_here = IsLossStage(st);
            bool grad_from_next = st < last && !s_.workload.local_losses;
            bool ok = false;
            if (loss_here) {
              ok = any_before({{st, mb, Op::kLoss, off}, {st, kAllMicrobatches, Op::kLoss, off}});
            }
            if (grad_from_next) {
              ok = ok || any_before({{st + 1, mb, Op::kBackward, off},
                                     {st + 1, mb, Op::kBackwardInput, off},
                                     {st, mb, Op::kRecvGradient, off}});
            }
            if (!ok) {
              Error(where + " runs before the gradient of its output is known (no earlier " +
                    (loss_here ? Name(st, kAllMicrobatches, Op::kLoss) + " / " : std::string()) +
                    (grad_from_next ? Name(st + 1, mb, Op::kBackward, off) + " or recv_gradient"
                                    : std::string("loss")) +
                    " on this rank)");
            }
            break;
          }
          case Op::kLoss: {
            std::vector<int> mbs = mb == kAllMicrobatches ? s_.MicrobatchesOf(st, r)
                                                          : std::vector<int>{mb};
            for (int m : mbs) must_follow({st, m, Op::kForward, off}, "the forward");
            if (s_.workload.has_teacher()) {
              for (int m : mbs) {
                // The teacher output may come from this iteration (offset 0)
                // or have been computed one iteration ahead (offset +1).
                bool found = CountAnyOffset(st, m, Op::kTeacherForward) == 0 ||
                             any_before({{st, m, Op::kTeacherForward, off}}) ||
                             Pos(r, {st, m, Op::kTeacherForward, off + 1}) >= 0;
                if (!found) {
                  Error(where + " runs before the teacher forward " +
                        Name(st, m, Op::kTeacherForward, off));
                }
              }
            }
            break;
          }
          case Op::kOptimizerStep:
          case Op::kAllReduceGradients: {
            for (int m : s_.MicrobatchesOf(st, r)) {
              must_follow(BackwardEnd(r, st, m, off), "the backward");
            }
            if (a.op == Op::kOptimizerStep && s_.placement[st].size() > 1 &&
                !s_.workload.independent_replicas) {
              must_follow({st, kAllMicrobatches, Op::kAllReduceGradients, off},
                          "the gradient all-reduce");
            }
            if (a.op == Op::kOptimizerStep) {
              for (long sync : SyncSteps(r)) {
                if (sync > step) {
                  Error(where + " runs before " + ToString(s_.ranks[r][sync]) +
                        ": tied gradients and clipping need every gradient of the rank first");
                  break;
                }
              }
            }
            break;
          }
          case Op::kSumTiedGradients:
          case Op::kClipGradients: {
            // Every gradient of the rank is final first: its backwards,
            // and the all-reduces they start.
            for (int stage : s_.StagesOnRank(r)) {
              for (int m : s_.MicrobatchesOf(stage, r)) {
                must_follow(BackwardEnd(r, stage, m, off), "the backward");
              }
              if (Pos(r, {stage, kAllMicrobatches, Op::kAllReduceGradients, off}) >= 0) {
                must_follow({stage, kAllMicrobatches, Op::kAllReduceGradients, off},
                            "the gradient all-reduce");
              }
            }
            if (a.op == Op::kClipGradients) {
              for (size_t j = i + 1; j < s_.ranks[r].size(); ++j) {
                if (s_.ranks[r][j].op == Op::kSumTiedGradients) {
                  Error(where + " runs before " + ToString(s_.ranks[r][j]) +
                        ": the norm counts the tied gradients summed");
                }
              }
            }
            break;
          }
          case Op::kTeacherUpdate:
            must_follow({st, kAllMicrobatches, Op::kOptimizerStep, off}, "the optimizer step");
            break;
          case Op::kSendActivation:
            must_follow({st, mb, Op::kForward, off}, "the forward it sends");
            break;
          case Op::kSendTeacherActivation:
            must_follow({st, mb, Op::kTeacherForward, off}, "the teacher forward it sends");
            break;
          case Op::kSendGradient:
            must_follow(InputGradient(r, st, mb, off), "the backward it sends");
            break;
          default:
            break;
        }
      }
    }
  }

  const Schedule& s_;
  ValidationResult result_;
  std::vector<std::map<Key, size_t>> pos_;
};

}  // namespace

ValidationResult Validate(const Schedule& schedule) { return Checker(schedule).Run(); }

}  // namespace tspipe
