// The unit of a schedule: one thing one rank does, e.g. "stage 1 runs the
// student forward of micro-batch 3" (printed "1F3").
//
// A schedule is data (see schedule.h): schedulers emit lists of Actions per
// rank, lowering passes add communication, the validator checks them, the
// simulator times them and an executor runs them. Nothing here knows about
// tensors or devices.
#ifndef TSPIPE_CORE_ACTION_H_
#define TSPIPE_CORE_ACTION_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace tspipe {

// Ops, with their compact codes. Communication ops come in pairs; each must be
// matched by its partner on the peer rank (the validator checks this).
enum class Op : uint8_t {
  kForward = 0,          // "F": student forward of (stage, micro-batch).
  kTeacherForward,       // "T": teacher forward; no autograd graph is kept.
  kBackward,             // "B": student backward of (stage, micro-batch).
  kLoss,                 // "L": loss on a stage's outputs; micro-batch -1 =
                         //      the whole mini-batch gathered.
  kSendActivation,       // "SA": send stage's student output to the rank of
                         //       stage+1. Must pair with RecvActivation.
  kRecvActivation,       // "RA": receive stage's student input from the rank
                         //       of stage-1. Must pair with SendActivation.
  kSendTeacherActivation,  // "ST": as SA, for the teacher.
  kRecvTeacherActivation,  // "RT": as RA, for the teacher.
  kSendGradient,         // "SG": send the gradient w.r.t. stage's input to the
                         //       rank of stage-1. Must pair with RecvGradient.
  kRecvGradient,         // "RG": receive the gradient w.r.t. stage's output
                         //       from the rank of stage+1.
  kAllReduceGradients,   // "AR": average stage's gradients over its replica
                         //       group; a collective every replica must join.
  kOptimizerStep,        // "O": step the stage's student optimizer and zero
                         //      its gradients (the only place they are zeroed).
  kTeacherUpdate,        // "U": update the stage's teacher (e.g. EMA).
  // The student backward split in two (zero-bubble pipelines): a micro-batch
  // of a stage has either one B, or one I and one W on the same rank, I
  // first. Appended here so that the codes above keep their numbers.
  kBackwardInput,        // "I": gradient w.r.t. the stage's input only (what
                         //      the previous stage waits for); the graph is
                         //      kept for the W.
  kBackwardWeight,       // "W": gradient w.r.t. the stage's parameters,
                         //      accumulated; frees the graph.
  // Gradients that need more than one stage's view before the optimizer
  // steps; inserted by AddGradientSync (core/lowering.h) after the rank's
  // last backward, before its optimizer steps.
  kSumTiedGradients,     // "TG": sum the gradients of the parameters this
                         //       rank's stages share with rank `peer`'s
                         //       (Workload::tied_stages: one parameter two
                         //       stages hold a copy of), so both copies take
                         //       the same step. A collective of the two
                         //       ranks: must pair with TG~this rank on the
                         //       peer. Without a peer (both copies here) a
                         //       local sum.
  kClipGradients,        // "GN": scale the gradients of the rank's model
                         //       replica so that their 2-norm over all its
                         //       stages is at most the clipping norm
                         //       (Workload::clip_gradients): an all-reduce
                         //       of one number that every rank holding a
                         //       stage of the replica joins.
};
inline constexpr int kNumOps = static_cast<int>(Op::kClipGradients) + 1;

// Micro-batch index of actions that concern a whole mini-batch (L, O, U, AR,
// TG, GN).
inline constexpr int kAllMicrobatches = -1;
// Peer of an action that is not communication.
inline constexpr int kNoPeer = -1;

struct Action {
  int stage = 0;
  int microbatch = kAllMicrobatches;
  Op op = Op::kForward;
  // Which mini-batch relative to the one the schedule iteration trains: TSPipe
  // runs teacher forwards of the next mini-batch (+1) inside this iteration.
  int batch_offset = 0;
  // For communication ops, the rank on the other side; kNoPeer otherwise.
  int peer = kNoPeer;

  friend bool operator==(const Action& a, const Action& b) {
    return a.stage == b.stage && a.microbatch == b.microbatch && a.op == b.op &&
           a.batch_offset == b.batch_offset && a.peer == b.peer;
  }
  friend bool operator!=(const Action& a, const Action& b) { return !(a == b); }
};

std::string_view OpCode(Op op);   // "F", "SA", ...
std::string_view OpName(Op op);   // "forward", "send_activation", ...
bool IsCommunication(Op op);      // SA, RA, ST, RT, SG, RG: point to point.
bool IsSend(Op op);
// AR, TG, GN: reductions over a group of ranks (CollectiveOf names them).
bool IsCollective(Op op);
bool IsCompute(Op op);            // F, T, B, I, W, L, O, U: ops that occupy a device.
// B or I: the action after which the gradient w.r.t. the stage's input is
// known (what sends it, or what the previous stage's backward waits on).
bool GivesInputGradient(Op op);
// B or W: the action after which the micro-batch's parameter gradients are
// accumulated and its graph (the activations it stashed) is gone.
bool EndsBackward(Op op);
// The op that a send/recv must be paired with (SA <-> RA, ...).
Op PairedOp(Op op);

// Compact form: <stage><code>[<microbatch>][+<offset>|-<offset>][>peer|<peer|~peer]
// e.g. "1F3", "3L", "0O", "1T2+1", "0SA3>1" (send to rank 1), "1RA3<0"
// (receive from rank 0), "0TG~3" (sum tied gradients with rank 3).
std::string ToString(const Action& action);

// Parses the compact form. Returns false and fills *error (naming the text)
// when `text` is not a valid action.
bool ParseAction(std::string_view text, Action* action, std::string* error);

}  // namespace tspipe

#endif  // TSPIPE_CORE_ACTION_H_
