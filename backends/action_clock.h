// Records when each action of one rank starts and ends, for the executor's
// trace (core/trace.h): the host's steady clock for CPU ranks; for GPU ranks
// CUDA events on the rank's current stream, since a kernel launch returns
// long before the kernel has run, mapped onto the host clock after the run.
#ifndef TSPIPE_BACKENDS_ACTION_CLOCK_H_
#define TSPIPE_BACKENDS_ACTION_CLOCK_H_

#include <c10/core/Device.h>
#include <c10/core/Event.h>

#include <memory>
#include <vector>

#include "core/trace.h"

namespace tspipe {

// Microseconds on the host's steady clock (the trace's clock).
double SteadyMicros();

class ActionClock {
 public:
  ActionClock(int rank, c10::Device device);

  // At the start of a run, before the first Begin.
  void Start();
  // Around one action (or sync point): Begin() before it, End() after.
  void Begin();
  void End(TraceEvent::Kind kind, int index, const Action& action, int64_t step);
  // After the run and, for a GPU rank, after its device has synchronised:
  // the run's events, in the order they ran.
  std::vector<TraceEvent> Finish();

 private:
  int rank_;
  c10::Device device_;
  std::vector<TraceEvent> events_;
  double begin_us_ = 0;
  // The thread's metered bytes at Begin (MemoryMeter::ThreadBytes).
  int64_t begin_bytes_ = 0;
  // GPU ranks: one event at Start, recorded with the host time then, and a
  // start/end pair per TraceEvent.
  double reference_us_ = 0;
  std::unique_ptr<c10::Event> reference_;
  std::vector<std::unique_ptr<c10::Event>> marks_;
};

}  // namespace tspipe

#endif  // TSPIPE_BACKENDS_ACTION_CLOCK_H_
