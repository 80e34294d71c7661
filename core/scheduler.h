// The scheduler interface: a pure function from (stages, micro-batches,
// devices, workload) to the compute actions of each rank. No tensors,
// devices or globals, so every scheduler is testable anywhere. BuildSchedule
// lowers what it emits (core/lowering.h: communication, gradient
// reductions, tied sums, clipping) and validates the result, so a
// scheduler that builds is a scheduler that runs. Guide:
// docs/ADDING_A_SCHEDULER.md.
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
  // Builds one training iteration (one optimizer step per stage replica)
  // as compute actions only (F, T, B, I, W, L, O, U), with the placement
  // and workload filled in. Throws std::invalid_argument naming the problem
  // when the options cannot be scheduled (e.g. zero micro-batches).
  virtual Schedule Build(const SchedulerOptions& options) const = 0;
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

// Builds with the registered scheduler `name`, lowers it (core/lowering.h)
// and validates the result (core/validator.h: counts, order, pairing,
// posting order, the gradient reductions and syncs the workload needs, no
// deadlock), throwing std::logic_error with the validator's report if it is
// invalid (std::invalid_argument for options it cannot schedule).
Schedule BuildSchedule(const std::string& name, const SchedulerOptions& options);

}  // namespace tspipe

// Registers a factory (the trailing arguments: an expression callable with
// no arguments that returns std::unique_ptr<T>, T a Scheduler, e.g. a lambda
// making a configured instance) under `name`, from a static initialiser of
// the implementing file (its library is alwayslink), e.g.
//   TSPIPE_REGISTER_SCHEDULER("gpipe", "fill-drain", [] {
//     return std::make_unique<GPipeScheduler>();
//   });
#define TSPIPE_REGISTER_SCHEDULER(name, help, ...) \
  TSPIPE_REGISTER_SCHEDULER_AT(__COUNTER__, name, help, __VA_ARGS__)
#define TSPIPE_REGISTER_SCHEDULER_AT(id, name, help, ...) \
  TSPIPE_REGISTER_SCHEDULER_IMPL(id, name, help, __VA_ARGS__)
#define TSPIPE_REGISTER_SCHEDULER_IMPL(id, name, help, ...)                  \
  static const bool tspipe_scheduler_registered_##id =                      \
      ::tspipe::SchedulerRegistry::Global().Register(name, help, [] {        \
        return std::unique_ptr<::tspipe::Scheduler>((__VA_ARGS__)());       \
      })

#endif  // TSPIPE_CORE_SCHEDULER_H_
