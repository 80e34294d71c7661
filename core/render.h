// Pictures of a schedule: a text grid (time slot x rank) and an SVG timeline.
#ifndef TSPIPE_CORE_RENDER_H_
#define TSPIPE_CORE_RENDER_H_

#include <string>

#include "core/schedule.h"
#include "core/simulator.h"

namespace tspipe {

// One row per time slot of `slot` units, one column per rank; a cell shows the
// compute action busy in that slot ("." when idle). Communication is omitted:
// it takes no device time in the simulator.
std::string FormatGrid(const Schedule& schedule, const SimulationResult& result,
                       double slot = 1.0);

struct TimelineStyle {
  // Leads the title instead of the scheduler's name.
  std::string title;
  // Time the picture's width stands for; 0 = the makespan. Pictures drawn
  // with one span share a scale (measured beside simulated).
  double time_span = 0;
  // Unit of the times, shown in the title; empty = the simulator's units.
  std::string unit;
};

// An SVG timeline: one lane per rank, one coloured box per compute action,
// labelled with its compact form.
std::string TimelineSvg(const Schedule& schedule, const SimulationResult& result,
                        const TimelineStyle& style = {});

}  // namespace tspipe

#endif  // TSPIPE_CORE_RENDER_H_
