// The validator's checks of what crosses ranks (core/validator.h): the
// tied-gradient sums and clipping steps a workload calls for, the pairing of
// sends with receives and of TGs, and the order both sides of a rank pair
// post their messages in. Internal to the validator.
#ifndef TSPIPE_CORE_VALIDATOR_CROSS_RANK_H_
#define TSPIPE_CORE_VALIDATOR_CROSS_RANK_H_

#include <string>
#include <vector>

#include "core/schedule.h"

namespace tspipe {

// One TG per rank and tie partner (none when both copies are on the rank),
// one GN per rank holding a stage when clipping; nothing else. Appends an
// error per problem.
void CheckGradientSync(const Schedule& schedule, std::vector<std::string>* errors);

// Every send has its receive on the peer and vice versa (MessageOf names
// both sides), every TG~q its TG on q; no traffic the workload has no use
// for. Appends an error per problem.
void CheckPairing(const Schedule& schedule, std::vector<std::string>* errors);

}  // namespace tspipe

#endif  // TSPIPE_CORE_VALIDATOR_CROSS_RANK_H_
