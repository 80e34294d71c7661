// Dry-runs a schedule: each rank executes its actions in order, a receive waits
// for its matching send, a collective for every member of its group (AR
// only at the stage's optimizer step). Turns per-op
// costs into start/end times, makespan, bubble fraction and utilisation, and
// finds deadlocks.
#ifndef TSPIPE_CORE_SIMULATOR_H_
#define TSPIPE_CORE_SIMULATOR_H_

#include <string>
#include <vector>

#include "core/schedule.h"

namespace tspipe {

// Cost of each op in arbitrary time units. A per-stage vector, when not
// empty, overrides the scalar for that op (asymmetric partitions).
struct CostModel {
  double forward = 1.0;
  double teacher_forward = 1.0;
  double backward = 2.0;
  // The two halves of a split backward (I, W). Negative: what the
  // executor does with a whole backward's cost B (the profiler's): half
  // each, except on stage 0, whose input is data: I = 0 and W = B.
  double backward_input = -1.0;
  double backward_weight = -1.0;
  double loss = 0.0;
  double optimizer_step = 0.0;
  double teacher_update = 0.0;
  // A gradient all-reduce: it starts when every replica has started it,
  // runs beside their computation, and the stage's optimizer step waits for
  // its end (as the executor overlaps it); it occupies no rank.
  double all_reduce = 0.0;
  // A TG or GN: every member waits until all have joined, then this long
  // (the reduction of a few tensors).
  double gradient_sync = 0.0;
  // Latency of one message; sends do not occupy the sender.
  double message = 0.0;
  std::vector<double> forward_per_stage;
  std::vector<double> teacher_forward_per_stage;
  std::vector<double> backward_per_stage;
  std::vector<double> backward_input_per_stage;
  std::vector<double> backward_weight_per_stage;

  double Cost(const Action& action) const;
};

struct ActionTiming {
  double start = 0.0;
  double end = 0.0;
};

struct SimulationResult {
  bool deadlocked = false;
  // When deadlocked: one line per blocked rank naming the action it waits on.
  std::string deadlock_report;
  double makespan = 0.0;
  // Per rank: time spent in compute ops (F, T, B, L, O, U); all-reduces
  // travel beside them and count as idle time where the rank waits.
  std::vector<double> busy;
  // timings[rank][i] for schedule.ranks[rank][i].
  std::vector<std::vector<ActionTiming>> timings;

  // 1 - total busy time / (ranks * makespan): the share of device time idle.
  double BubbleFraction() const;
  double Utilisation(int rank) const;
};

SimulationResult Simulate(const Schedule& schedule, const CostModel& costs);

// Steady state of training with no barrier between iterations: each rank runs
// its list again as soon as it finishes it (as the executor does), so one
// iteration's drain overlaps the next one's fill.
struct SteadyState {
  // Time per iteration once the pipeline is full.
  double period = 0.0;
  // 1 - busy time per iteration / (ranks * period).
  double bubble_fraction = 0.0;
  bool deadlocked = false;
};
SteadyState SimulateSteadyState(const Schedule& schedule, const CostModel& costs);

// What each stage holds in memory at most, in micro-batches, over one
// iteration of the steady state, counted along each rank's action order:
//   student[s]  micro-batches whose forward on stage s has run and whose
//               backward has not (the activations the backward needs);
//   teacher[s]  teacher outputs of stage s waiting for a loss on stage s
//               (only loss stages keep them; others send them on), the
//               ones a look-ahead schedule produced for the next mini-batch
//               included: those of the previous iteration are held at its
//               start;
//   weight[s]   of the student ones, micro-batches whose input gradient
//               (I) has run and whose weight gradient (W) has not: what a
//               split backward keeps alive only for the W (0 without one).
// With replicas, the most any replica of the stage holds.
struct StashPeaks {
  std::vector<int> student;
  std::vector<int> teacher;
  std::vector<int> weight;
};
StashPeaks PeakStashes(const Schedule& schedule);
// PeakStashes in bytes, per stage: student[s] x student_bytes[s] +
// teacher[s] x teacher_bytes[s], from the bytes one micro-batch's forward
// keeps for its backward and one teacher output (measured: see
// TraceSummary). Missing entries count 0.
std::vector<double> StashBytes(const StashPeaks& peaks, const std::vector<double>& student_bytes,
                               const std::vector<double>& teacher_bytes);

// `iterations` copies of each rank's list back to back; copy i has its batch
// offsets shifted by i so that its messages are distinct.
Schedule Unroll(const Schedule& schedule, int iterations);

// Human-readable statistics, one "key=value" per line, including
// "bubble_fraction=<number>" (one iteration, from an idle pipeline),
// "steady_bubble_fraction=<number>" (iterations back to back) and
// "utilisation_rank<r>=<number>" and, per stage, "stash_peak_stage<s>=
// <student>+<teacher>" (PeakStashes, in micro-batches) and, for split
// backwards, "weight_stash_peak_stage<s>=<n>".
// With `student_bytes` / `teacher_bytes` given (StashBytes), also
// "stash_bytes_stage<s>=<bytes>".
std::string FormatStats(const Schedule& schedule, const SimulationResult& result,
                        const CostModel& costs, const std::vector<double>& student_bytes = {},
                        const std::vector<double>& teacher_bytes = {});

}  // namespace tspipe

#endif  // TSPIPE_CORE_SIMULATOR_H_
