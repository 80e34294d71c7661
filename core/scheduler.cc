#include "core/scheduler.h"

#include <stdexcept>

#include "core/lowering.h"
#include "core/validator.h"

namespace tspipe {

void CheckSchedulerOptions(const SchedulerOptions& o) {
  if (o.num_stages < 1) {
    throw std::invalid_argument("stage count must be at least 1, got " +
                                std::to_string(o.num_stages));
  }
  if (o.num_microbatches < 1) {
    throw std::invalid_argument("micro-batch count must be at least 1, got " +
                                std::to_string(o.num_microbatches));
  }
  if (o.num_devices < 0) {
    throw std::invalid_argument("device count must not be negative, got " +
                                std::to_string(o.num_devices));
  }
}

void CheckOneStagePerDevice(const std::string& scheduler, const SchedulerOptions& o) {
  if (o.num_devices != 0 && o.num_devices != o.num_stages) {
    throw std::invalid_argument(scheduler + " runs one stage per device: " +
                                std::to_string(o.num_stages) + " stages need " +
                                std::to_string(o.num_stages) + " devices, got " +
                                std::to_string(o.num_devices));
  }
}

Schedule BuildSchedule(const std::string& name, const SchedulerOptions& options) {
  CheckSchedulerOptions(options);
  std::unique_ptr<Scheduler> scheduler = SchedulerRegistry::Global().Create(name);
  Schedule schedule = scheduler->Build(options);
  schedule.scheduler = name;
  // What the algorithm and the cut need, whatever the scheduler copied.
  schedule.workload = options.workload;
  Lower(&schedule);
  ValidationResult v = Validate(schedule);
  if (!v.ok()) {
    throw std::logic_error("scheduler '" + name + "' produced an invalid schedule:\n" +
                           v.ToString());
  }
  return schedule;
}

}  // namespace tspipe
