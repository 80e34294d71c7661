// The scheduler interface: a pure function from (stages, micro-batches,
// devices, workload) to a Schedule. No tensors, devices or globals, so every
// scheduler is testable anywhere.
#ifndef TSPIPE_CORE_SCHEDULER_H_
#define TSPIPE_CORE_SCHEDULER_H_

#include <memory>
#include <string>

#include "core/registry.h"
#include "core/schedule.h"
#include "core/simulator.h"

namespace tspipe {

struct SchedulerOptions {
  int num_stages = 1;
  int num_microbatches = 1;
  // Devices (ranks) to use; 0 means the scheduler's natural count (one per
  // stage for pipelines).
  int num_devices = 0;
  Workload workload;
  // Expected op costs, for schedulers that plan with them (TSPipe fills
  // bubbles by list scheduling on these). Relative values are what matter.
  CostModel costs;
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;
  // Builds one training iteration (one optimizer step per stage replica),
  // communication included. Throws std::invalid_argument naming the problem
  // when the options cannot be scheduled (e.g. zero micro-batches).
  virtual Schedule Build(const SchedulerOptions& options) const = 0;
  // Devices the schedule uses for `options` (ranks of Build's result).
  virtual int NumDevices(const SchedulerOptions& options) const = 0;
  // True for schedules that always run on one device (the sequential
  // baseline): a requested device count does not apply to them.
  virtual bool RunsOnOneDevice() const { return false; }
};

using SchedulerRegistry = Registry<Scheduler>;

// Checks what every scheduler requires of its options; throws
// std::invalid_argument naming the bad value.
void CheckSchedulerOptions(const SchedulerOptions& options);

// For pipelines that put stage s on rank s: throws std::invalid_argument
// naming `scheduler` unless options.num_devices is 0 or the stage count.
void CheckOneStagePerDevice(const std::string& scheduler, const SchedulerOptions& options);

// Builds with the registered scheduler `name` and validates the result,
// throwing std::logic_error with the validator's report if it is invalid.
Schedule BuildSchedule(const std::string& name, const SchedulerOptions& options);

}  // namespace tspipe

#define TSPIPE_REGISTER_SCHEDULER(name, help, type)                         \
  static const bool tspipe_scheduler_registered_##type =                    \
      ::tspipe::SchedulerRegistry::Global().Register(                       \
          name, help, [] { return std::unique_ptr<::tspipe::Scheduler>(new type()); })

#endif  // TSPIPE_CORE_SCHEDULER_H_
