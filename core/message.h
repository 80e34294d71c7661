// How both sides of a message name it, so that a send and the receive that
// takes it can be paired (the simulator, the gradient sync's deadlock check,
// the trace's flow arrows).
#ifndef TSPIPE_CORE_MESSAGE_H_
#define TSPIPE_CORE_MESSAGE_H_

#include <cstdint>
#include <tuple>

#include "core/action.h"

namespace tspipe {

// (sending op, sender's stage, micro-batch, mini-batch, from rank, to rank).
using MessageId = std::tuple<int, int, int, int64_t, int, int>;

// The message a send or receive action of `rank` concerns, for the list
// iteration training mini-batch `batch` (the action's batch_offset is
// added). RA(s)<q takes SA(s-1)>me, RT likewise, RG(s)<q takes SG(s+1)>me.
// Only for communication actions.
MessageId MessageOf(const Action& action, int rank, int64_t batch);

}  // namespace tspipe

#endif  // TSPIPE_CORE_MESSAGE_H_
