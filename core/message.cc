#include "core/message.h"

namespace tspipe {

MessageId MessageOf(const Action& a, int rank, int64_t batch) {
  batch += a.batch_offset;
  if (IsSend(a.op)) return {static_cast<int>(a.op), a.stage, a.microbatch, batch, rank, a.peer};
  const int sender_stage = a.op == Op::kRecvGradient ? a.stage + 1 : a.stage - 1;
  return {static_cast<int>(PairedOp(a.op)), sender_stage, a.microbatch, batch, a.peer, rank};
}

}  // namespace tspipe
