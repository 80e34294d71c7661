// Checks that a schedule is complete and executable before anything runs it.
#ifndef TSPIPE_CORE_VALIDATOR_H_
#define TSPIPE_CORE_VALIDATOR_H_

#include <string>
#include <vector>

#include "core/schedule.h"

namespace tspipe {

struct ValidationResult {
  // Each error names the offending action in compact form, e.g.
  // "rank 1: 1B0 at step 2 runs before its forward 1F0".
  std::vector<std::string> errors;

  bool ok() const { return errors.empty(); }
  std::string ToString() const;  // All errors, one per line.
};

// The rules, for schedule.workload:
//  - structure: ranks and stages in range, every action's stage placed on the
//    rank that runs it, micro-batches in range;
//  - exact counts: every (stage, micro-batch) has exactly one F, one B and
//    (with a teacher) one T across the stage's replicas; every loss stage's
//    micro-batches are covered by exactly one L; one O per replica (one U per
//    replica when the teacher updates; one AR per replica of a replicated
//    stage); duplicates and missing actions are named;
//  - order on a rank: B after its F and after its output gradient is known
//    (L, local B of the next stage, or RG), F after its input (local F of the
//    previous stage or RA), L after the forwards it covers, O after the
//    stage's backwards (and AR), sends after what they send;
//  - pairing: every send has exactly one matching receive on its peer and
//    vice versa;
//  - no deadlock: a dry run with unit costs completes.
ValidationResult Validate(const Schedule& schedule);

// For transports that match point-to-point messages in the order they are
// posted rather than by tag (NCCL): "" when, for every ordered pair of ranks
// (a, b), a's sends to b and b's receives from a name the same messages in
// the same order; otherwise a message naming the pair and the first
// position where they differ. Iterations repeat the lists, so one iteration
// decides.
std::string CheckMessageOrder(const Schedule& schedule);

}  // namespace tspipe

#endif  // TSPIPE_CORE_VALIDATOR_H_
