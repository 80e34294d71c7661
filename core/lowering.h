// Lowering: a scheduler emits compute actions only (F, T, B, I, W, L, O, U);
// these passes, each a schedule -> schedule function, add every step that
// crosses ranks, so that the validator checks and the simulator times them
// like any other action (as torch.distributed.pipelining's
// _add_reduce_grad / _add_send_recv do):
//   AddGradientReduction  AR of each replicated stage's gradients;
//   LowerCommunication    SA/RA, ST/RT, SG/RG at stage boundaries across ranks;
//   AddGradientSync       TG (tied gradients) and GN (global-norm clipping).
// Lower runs them in that order; BuildSchedule (core/scheduler.h) calls it.
#ifndef TSPIPE_CORE_LOWERING_H_
#define TSPIPE_CORE_LOWERING_H_

#include <vector>

#include "core/schedule.h"

namespace tspipe {

// Throws std::invalid_argument naming the first action that is not a
// compute action (communication or a collective): the passes below add
// those, so a scheduler's output must not contain them.
void CheckComputeOnly(const Schedule& schedule);

// For every stage with several replicas that are one model (not
// Workload::independent_replicas): an AR on each replica's rank right after
// the stage's last backward there (B or W), so the backward of earlier
// stages overlaps the all-reduce; the optimizer step waits for it.
void AddGradientReduction(Schedule* schedule);

// Inserts send/recv actions for every stage boundary that crosses ranks:
// SA after the producing F on the sender, RA just before the consuming F on
// the receiver (likewise ST/RT for T, SG/RG for B or I when gradients flow).
// A send whose peer takes an earlier message first waits for that one's
// send: both sides of every rank pair post in one order, as NCCL (which
// matches in posting order) needs. The input must contain no communication
// yet.
void LowerCommunication(Schedule* schedule);

// Workload::tied_stages and clip_gradients as actions, on every rank right
// after its last backward, gradient send or all-reduce start (before its
// first optimizer step when it has none): one TG per rank it shares tied
// parameters with (TG~peer; a local TG when both copies are on the rank),
// ascending by peer so that the pairwise collectives cannot wait on each
// other in a cycle; then one GN when clipping. Throws
// std::invalid_argument naming the problem: a tie naming a stage outside
// the schedule, tied stages with different replica counts, clipping with
// stages of different replica counts or a rank holding stages of two
// replicas.
void AddGradientSync(Schedule* schedule);

// CheckComputeOnly, then the three passes in order.
void Lower(Schedule* schedule);

// The ranks holding replica `replica` of the model, in stage order, each
// once: the group of its GN.
std::vector<int> ReplicaRanks(const Schedule& schedule, int replica);

}  // namespace tspipe

#endif  // TSPIPE_CORE_LOWERING_H_
