// Measured timelines: when each action of a schedule ran on each rank, as an
// executor records it (backends/executor.h, ExecutorOptions::record_trace),
// and what to make of it: a Chrome trace / Perfetto JSON file, the measured
// bubble and period over the steady steps, the simulator's prediction from
// the measured per-action costs, and an SVG of measured against simulated.
// Nothing here knows about tensors or devices.
#ifndef TSPIPE_CORE_TRACE_H_
#define TSPIPE_CORE_TRACE_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/action.h"
#include "core/schedule.h"
#include "core/simulator.h"

namespace tspipe {

struct TraceEvent {
  enum class Kind : uint8_t {
    kAction,    // schedule.ranks[rank][index]
    kPrologue,  // TeacherPrologue(schedule).ranks[rank][index]
  };
  Kind kind = Kind::kAction;
  int rank = 0;
  int index = 0;
  Action action;
  // The 0-based training step (mini-batch) the list iteration trains.
  int64_t step = 0;
  // Microseconds on one clock shared by every rank of the run (the steady
  // clock of the host; GPU ranks map their CUDA events onto it). For
  // communication, start is when the message was posted (send) or asked for
  // (receive) and end is when the action returned, for a receive when the
  // data had arrived.
  double start_us = 0;
  double end_us = 0;
  // Bytes the rank's thread allocated during the action and still held at
  // its end (backends/memory_meter.h; 0 when not metered): for a forward
  // the activations its graph saved and its output, for a teacher forward
  // its output; negative for what frees (B, W).
  int64_t held_bytes = 0;
};

// One scheduler's recorded run.
struct TraceRun {
  std::string name;  // Shown as the trace's process, e.g. "tspipe".
  Schedule schedule;
  std::vector<TraceEvent> events;
  // Peak bytes the recorded runs held, by device (Executor::TakeMemoryPeaks).
  std::map<std::string, int64_t> peak_bytes;
  // When the trainer waited for its data source (start, end), on the
  // events' clock: a "data" track in the Chrome trace.
  std::vector<std::pair<double, double>> data_waits;
};

// "1F3", "0ST2+1>1", "0TG~3".
std::string EventName(const TraceEvent& event);

// Chrome trace event format (what Perfetto's UI and chrome://tracing open):
// per run a process, per rank a thread track, one complete ("X") event per
// action with its compact name, and a flow arrow ("s" -> "f") from each send
// to the receive that took its message. Times relative to the earliest
// event of all runs.
std::string ChromeTraceJson(const std::vector<TraceRun>& runs);

struct TraceSummary {
  // Steps the figures cover: all recorded steps but the first and the last
  // (fill and drain), so at least 3 must be recorded.
  int steady_steps = 0;
  // Per rank: its window runs from its first action of the first steady
  // step to its first action of the last recorded step. Period = mean
  // window / steady steps; bubble = 1 - compute time in the windows /
  // total window time (compute = F, T, B, L, O, U, as the simulator counts).
  double period_us = 0;
  double bubble = 0;
  // Median measured duration of each op over the steady steps (per stage
  // for F, T and B), in microseconds; messages cost nothing (their time is
  // what the comparison exposes).
  CostModel costs;
  // SimulateSteadyState(schedule, costs).
  double predicted_period_us = 0;
  double predicted_bubble = 0;
  // Per stage, the median bytes a student forward and a teacher forward
  // held (TraceEvent::held_bytes), and PeakStashes in bytes from them
  // (StashBytes): what the schedule predicts each stage holds at most.
  std::vector<double> forward_bytes;
  std::vector<double> teacher_bytes;
  std::vector<double> predicted_stash_bytes;
};

// Throws std::invalid_argument when fewer than 3 steps were recorded or a
// rank recorded none of them.
TraceSummary SummarizeTrace(const TraceRun& run);

// For each run, the recorded steps as measured (compute actions only) above
// the same steps simulated from the measured costs, on one time scale.
std::string MeasuredTimelineSvg(const std::vector<TraceRun>& runs);

// Checks what ChromeTraceJson promises of `json`: valid JSON, a traceEvents
// array whose events have a name, a phase (M, X, s or f), pid, tid and
// timestamps, non-negative durations, and flows whose every "s" has one "f"
// with the same id not before it. Returns "" or the first problem.
std::string CheckChromeTrace(const std::string& json);

}  // namespace tspipe

#endif  // TSPIPE_CORE_TRACE_H_
