#include "core/message.h"

#include <stdexcept>

namespace tspipe {

Message MessageOf(const Action& a, int rank, int64_t batch) {
  Message m;
  m.key.microbatch = a.microbatch;
  m.key.batch = batch + a.batch_offset;
  switch (a.op) {
    case Op::kSendActivation:
    case Op::kRecvActivation:
      m.key.channel = Channel::kActivation;
      break;
    case Op::kSendTeacherActivation:
    case Op::kRecvTeacherActivation:
      m.key.channel = Channel::kTeacherActivation;
      break;
    case Op::kSendGradient:
    case Op::kRecvGradient:
      m.key.channel = Channel::kGradient;
      break;
    default:
      throw std::logic_error("MessageOf: " + ToString(a) + " is not a send or receive");
  }
  // Keyed by the stage that receives: activations flow up, gradients down.
  if (IsSend(a.op)) {
    m.key.stage = a.op == Op::kSendGradient ? a.stage - 1 : a.stage + 1;
    m.from = rank;
    m.to = a.peer;
  } else {
    m.key.stage = a.stage;
    m.from = a.peer;
    m.to = rank;
  }
  return m;
}

std::string Describe(const MessageKey& k) {
  static const char* kNames[] = {"activation", "teacher activation", "gradient"};
  return std::string(kNames[static_cast<int>(k.channel)]) + " of stage " +
         std::to_string(k.stage) + ", micro-batch " + std::to_string(k.microbatch) +
         ", mini-batch " + std::to_string(k.batch + 1);
}

CollectiveId CollectiveOf(const Action& a, int64_t batch) {
  CollectiveId id;
  id.batch = batch + a.batch_offset;
  switch (a.op) {
    case Op::kAllReduceGradients:
      id.kind = CollectiveId::Kind::kGradients;
      id.stage = a.stage;
      break;
    case Op::kSumTiedGradients:
      id.kind = CollectiveId::Kind::kTiedGradients;
      break;
    case Op::kClipGradients:
      id.kind = CollectiveId::Kind::kGradientNorm;
      break;
    case Op::kTeacherUpdate:
      id.kind = CollectiveId::Kind::kPeerExchange;
      id.stage = a.stage;
      break;
    default:
      throw std::logic_error("CollectiveOf: " + ToString(a) + " is not a collective");
  }
  return id;
}

std::string Describe(const CollectiveId& id) {
  const std::string step = " of training step " + std::to_string(id.batch + 1);
  switch (id.kind) {
    case CollectiveId::Kind::kGradients:
      return "the gradient all-reduce of stage " + std::to_string(id.stage) + step;
    case CollectiveId::Kind::kTiedGradients:
      return "the sum of tied gradients" + step;
    case CollectiveId::Kind::kGradientNorm:
      return "the all-reduce of the gradient norm (clipping)" + step;
    case CollectiveId::Kind::kPeerExchange:
      return "the parameter exchange of stage " + std::to_string(id.stage) + step;
    case CollectiveId::Kind::kBroadcast:
      return "the parameter broadcast to the replicas";
    case CollectiveId::Kind::kLossSum:
      return "the loss sum over processes";
    case CollectiveId::Kind::kCheckpointBarrier:
      return "the checkpoint barrier (every process's file written)";
    case CollectiveId::Kind::kCheckpointChoice:
      return "the choice of the checkpoint to resume from";
  }
  return "a collective";
}

}  // namespace tspipe
