#include "core/action.h"

#include <array>
#include <cctype>

namespace tspipe {
namespace {

struct OpInfo {
  Op op;
  std::string_view code;
  std::string_view name;
};

// Longest codes first, so that parsing "SA" is not mistaken for ... nothing
// else starts with S, but keep the rule for future codes.
constexpr std::array<OpInfo, kNumOps> kOps = {{
    {Op::kForward, "F", "forward"},
    {Op::kTeacherForward, "T", "teacher_forward"},
    {Op::kBackward, "B", "backward"},
    {Op::kLoss, "L", "loss"},
    {Op::kSendActivation, "SA", "send_activation"},
    {Op::kRecvActivation, "RA", "recv_activation"},
    {Op::kSendTeacherActivation, "ST", "send_teacher_activation"},
    {Op::kRecvTeacherActivation, "RT", "recv_teacher_activation"},
    {Op::kSendGradient, "SG", "send_gradient"},
    {Op::kRecvGradient, "RG", "recv_gradient"},
    {Op::kAllReduceGradients, "AR", "all_reduce_gradients"},
    {Op::kOptimizerStep, "O", "optimizer_step"},
    {Op::kTeacherUpdate, "U", "teacher_update"},
    {Op::kBackwardInput, "I", "backward_input"},
    {Op::kBackwardWeight, "W", "backward_weight"},
    {Op::kSumTiedGradients, "TG", "sum_tied_gradients"},
    {Op::kClipGradients, "GN", "clip_gradients"},
}};

bool ParseInt(std::string_view text, size_t* pos, int* value) {
  size_t start = *pos;
  int v = 0;
  while (*pos < text.size() && std::isdigit(static_cast<unsigned char>(text[*pos]))) {
    v = v * 10 + (text[*pos] - '0');
    if (v > 1000000) return false;
    ++*pos;
  }
  *value = v;
  return *pos > start;
}

}  // namespace

std::string_view OpCode(Op op) { return kOps[static_cast<int>(op)].code; }
std::string_view OpName(Op op) { return kOps[static_cast<int>(op)].name; }

bool IsCommunication(Op op) {
  switch (op) {
    case Op::kSendActivation:
    case Op::kRecvActivation:
    case Op::kSendTeacherActivation:
    case Op::kRecvTeacherActivation:
    case Op::kSendGradient:
    case Op::kRecvGradient:
      return true;
    default:
      return false;
  }
}

bool IsSend(Op op) {
  return op == Op::kSendActivation || op == Op::kSendTeacherActivation ||
         op == Op::kSendGradient;
}

bool IsCollective(Op op) {
  return op == Op::kAllReduceGradients || op == Op::kSumTiedGradients ||
         op == Op::kClipGradients;
}

bool IsCompute(Op op) { return !IsCommunication(op) && !IsCollective(op); }

bool GivesInputGradient(Op op) { return op == Op::kBackward || op == Op::kBackwardInput; }
bool EndsBackward(Op op) { return op == Op::kBackward || op == Op::kBackwardWeight; }

Op PairedOp(Op op) {
  switch (op) {
    case Op::kSendActivation: return Op::kRecvActivation;
    case Op::kRecvActivation: return Op::kSendActivation;
    case Op::kSendTeacherActivation: return Op::kRecvTeacherActivation;
    case Op::kRecvTeacherActivation: return Op::kSendTeacherActivation;
    case Op::kSendGradient: return Op::kRecvGradient;
    case Op::kRecvGradient: return Op::kSendGradient;
    default: return op;
  }
}

std::string ToString(const Action& a) {
  std::string s = std::to_string(a.stage);
  s += OpCode(a.op);
  if (a.microbatch != kAllMicrobatches) s += std::to_string(a.microbatch);
  if (a.batch_offset > 0) s += "+" + std::to_string(a.batch_offset);
  if (a.batch_offset < 0) s += "-" + std::to_string(-a.batch_offset);
  if (a.peer != kNoPeer) {
    s += a.op == Op::kSumTiedGradients ? "~" : IsSend(a.op) ? ">" : "<";
    s += std::to_string(a.peer);
  }
  return s;
}

bool ParseAction(std::string_view text, Action* action, std::string* error) {
  auto fail = [&](const std::string& why) {
    *error = "cannot parse action '" + std::string(text) + "': " + why;
    return false;
  };
  Action a;
  size_t pos = 0;
  if (!ParseInt(text, &pos, &a.stage)) return fail("expected a stage number");
  size_t best = 0;
  for (const OpInfo& info : kOps) {
    if (text.substr(pos, info.code.size()) == info.code && info.code.size() > best) {
      best = info.code.size();
      a.op = info.op;
    }
  }
  if (best == 0) return fail("unknown op code");
  pos += best;
  if (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) {
    ParseInt(text, &pos, &a.microbatch);
  }
  if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
    bool negative = text[pos] == '-';
    ++pos;
    if (!ParseInt(text, &pos, &a.batch_offset)) return fail("expected a batch offset");
    if (negative) a.batch_offset = -a.batch_offset;
  }
  if (pos < text.size() && text[pos] == '~') {
    if (a.op != Op::kSumTiedGradients) return fail("only TG has a '~peer'");
    ++pos;
    if (!ParseInt(text, &pos, &a.peer)) return fail("expected a peer rank");
  } else if (pos < text.size() && (text[pos] == '>' || text[pos] == '<')) {
    if (!IsCommunication(a.op)) return fail("only send/recv ops have a peer");
    bool is_send_arrow = text[pos] == '>';
    if (is_send_arrow != IsSend(a.op)) return fail("'>' marks sends, '<' receives");
    ++pos;
    if (!ParseInt(text, &pos, &a.peer)) return fail("expected a peer rank");
  } else if (IsCommunication(a.op)) {
    return fail("send/recv ops need a peer ('>rank' or '<rank')");
  }
  if (pos != text.size()) return fail("unexpected trailing characters");
  *action = a;
  return true;
}

}  // namespace tspipe
