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

// An SVG timeline: one lane per rank, one coloured box per compute action,
// labelled with its compact form.
std::string TimelineSvg(const Schedule& schedule, const SimulationResult& result);

}  // namespace tspipe

#endif  // TSPIPE_CORE_RENDER_H_
