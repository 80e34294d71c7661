// The one identity of everything that crosses ranks: a point-to-point
// message (what a send and the receive that takes it both name) and a
// collective (what every member of a reduction names). The simulator, the
// validator, the trace's flow arrows and both transports use these and
// nothing else, so the two sides of a pair can never disagree.
#ifndef TSPIPE_CORE_MESSAGE_H_
#define TSPIPE_CORE_MESSAGE_H_

#include <cstdint>
#include <string>
#include <tuple>

#include "core/action.h"

namespace tspipe {

enum class Channel : uint8_t { kActivation = 0, kTeacherActivation = 1, kGradient = 2 };

// (channel, receiving stage, micro-batch, absolute index of the mini-batch
// the data belongs to): unique over a whole run between two ranks, so
// iterations may overlap.
struct MessageKey {
  Channel channel = Channel::kActivation;
  int stage = 0;
  int microbatch = 0;
  int64_t batch = 0;

  friend bool operator<(const MessageKey& a, const MessageKey& b) {
    return std::tie(a.channel, a.stage, a.microbatch, a.batch) <
           std::tie(b.channel, b.stage, b.microbatch, b.batch);
  }
  friend bool operator==(const MessageKey& a, const MessageKey& b) {
    return !(a < b) && !(b < a);
  }
};

// A message between two ranks.
struct Message {
  MessageKey key;
  int from = 0;
  int to = 0;

  friend bool operator<(const Message& a, const Message& b) {
    return std::tie(a.key, a.from, a.to) < std::tie(b.key, b.from, b.to);
  }
  friend bool operator==(const Message& a, const Message& b) {
    return a.key == b.key && a.from == b.from && a.to == b.to;
  }
};

// The message a send or receive action of `rank` concerns, in the list
// iteration training mini-batch `batch` (the action's batch_offset is
// added): SA(s)>q sends the activation q's stage s+1 receives (RA(s+1)<me),
// ST likewise, SG(s)>q the gradient q's stage s-1 receives (RG(s-1)<me).
// Only for communication actions (IsCommunication).
Message MessageOf(const Action& action, int rank, int64_t batch);

// "activation of stage 1, micro-batch 2, mini-batch 5", for error messages.
std::string Describe(const MessageKey& key);

// A collective: what it reduces, and which one of its kind. Every member
// of the group names it alike; together with the group it is unique over
// a run.
struct CollectiveId {
  enum class Kind : uint8_t {
    kGradients,          // AR: a stage's gradients over its replicas.
    kTiedGradients,      // TG: tied copies' gradients between two ranks.
    kGradientNorm,       // GN: a model replica's squared gradient norm.
    kPeerExchange,       // U of separate models: a stage's parameters.
    kBroadcast,          // Replicas' initial parameters.
    kLossSum,            // The loss over every process (reporting).
    kCheckpointBarrier,  // Every process's checkpoint file written.
    kCheckpointChoice,   // Which checkpoint every process can resume from.
  };
  Kind kind = Kind::kGradients;
  // The stage of kGradients and kPeerExchange; 0 otherwise.
  int stage = 0;
  // The absolute mini-batch (training step) it belongs to, or for the
  // process-level kinds the call's own counter.
  int64_t batch = 0;

  friend bool operator<(const CollectiveId& a, const CollectiveId& b) {
    return std::tie(a.kind, a.stage, a.batch) < std::tie(b.kind, b.stage, b.batch);
  }
  friend bool operator==(const CollectiveId& a, const CollectiveId& b) {
    return !(a < b) && !(b < a);
  }
};

// The collective a collective action (IsCollective; U for separate
// models) runs, in the list iteration training mini-batch `batch`.
CollectiveId CollectiveOf(const Action& action, int64_t batch);

// "the gradient all-reduce of stage 2", "the checkpoint barrier", ...:
// what a lost peer or a timeout interrupted, for error messages.
std::string Describe(const CollectiveId& id);

}  // namespace tspipe

#endif  // TSPIPE_CORE_MESSAGE_H_
