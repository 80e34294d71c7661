#include "core/validator_cross_rank.h"

#include <algorithm>
#include <map>
#include <sstream>
#include <utility>

#include "core/message.h"
#include "core/validator.h"

namespace tspipe {
namespace {

// The action on the other side of a's message (MessageOf), for errors.
Action Partner(const Action& a, int rank) {
  const Message m = MessageOf(a, rank, 0);
  Action p = a;
  p.op = PairedOp(a.op);
  p.peer = rank;
  // A receive is keyed by its own stage; a send by the stage it feeds.
  const bool gradient = m.key.channel == Channel::kGradient;
  p.stage = IsSend(a.op) ? m.key.stage : m.key.stage + (gradient ? 1 : -1);
  return p;
}

}  // namespace

// The TG and GN actions Workload::tied_stages and clip_gradients call for
// (AddGradientSync inserts them): one TG per rank and tie partner (no
// peer when both copies are on the rank), one GN per rank holding a
// stage when clipping; nothing else.
void CheckGradientSync(const Schedule& s, std::vector<std::string>* errors) {
  auto error = [&](const std::string& e) { errors->push_back(e); };
  const Workload& w = s.workload;
  if (w.clip_gradients) {
    // A GN's group is the ranks of one replica of the model (ReplicaRanks):
    // the replicas must be whole models, one per rank, or replicas of one
    // stage would scale by different norms and drift apart.
    for (size_t st = 0; st < s.placement.size(); ++st) {
      if (s.placement[st].size() != s.placement[0].size()) {
        error("gradient clipping needs every stage with the same replica count; stage " +
              std::to_string(st) + " has " + std::to_string(s.placement[st].size()) +
              ", stage 0 " + std::to_string(s.placement[0].size()));
        break;
      }
    }
    for (int r = 0; r < s.num_ranks(); ++r) {
      int replica = -1;
      for (int st : s.StagesOnRank(r)) {
        const int rep = s.ReplicaIndex(st, r);
        if (replica >= 0 && rep != replica) {
          error("rank " + std::to_string(r) + " holds stages of different replicas; clipping "
                "by the global norm needs one model per rank");
          break;
        }
        replica = rep;
      }
    }
  }
  std::map<std::pair<int, int>, std::string> wanted;  // (rank, peer) -> why.
  for (const auto& [a, b] : w.tied_stages) {
    if (a < 0 || b < 0 || a >= s.num_stages || b >= s.num_stages) continue;
    if (s.placement[a].size() != s.placement[b].size()) {
      error("stages " + std::to_string(a) + " and " + std::to_string(b) +
            " share a tied parameter but have different replica counts");
      continue;
    }
    for (size_t rep = 0; rep < s.placement[a].size(); ++rep) {
      const int ra = s.placement[a][rep], rb = s.placement[b][rep];
      const std::string why = "the tied gradients of stages " + std::to_string(a) + " and " +
                              std::to_string(b) + " are never summed";
      if (ra == rb) {
        wanted.emplace(std::make_pair(ra, kNoPeer), why);
      } else {
        wanted.emplace(std::make_pair(ra, rb), why);
        wanted.emplace(std::make_pair(rb, ra), why);
      }
    }
  }
  for (int r = 0; r < s.num_ranks(); ++r) {
    std::map<int, int> tg;  // Peer -> count.
    int gn = 0;
    for (const Action& a : s.ranks[r]) {
      if (a.op == Op::kSumTiedGradients) ++tg[a.peer];
      if (a.op == Op::kClipGradients) ++gn;
    }
    for (const auto& [peer, count] : tg) {
      Action shown{0, kAllMicrobatches, Op::kSumTiedGradients, 0, peer};
      if (!wanted.count({r, peer})) {
        error("unexpected action " + ToString(shown).substr(1) + " on rank " +
              std::to_string(r) + ": the workload ties no parameter of this rank with " +
              (peer == kNoPeer ? std::string("another of its own stages")
                               : "rank " + std::to_string(peer)));
      } else if (count > 1) {
        error("duplicate action " + ToString(shown).substr(1) + " on rank " + std::to_string(r));
      }
    }
    for (const auto& [key, why] : wanted) {
      if (key.first != r || tg.count(key.second)) continue;
      Action shown{0, kAllMicrobatches, Op::kSumTiedGradients, 0, key.second};
      error("missing action " + ToString(shown).substr(1) + " on rank " + std::to_string(r) +
            ": " + why);
    }
    const bool holds = !s.StagesOnRank(r).empty();
    if (w.clip_gradients && holds && gn == 0) {
      error("missing action GN on rank " + std::to_string(r) +
            ": the gradients are clipped by their global norm, but this rank never joins its "
            "all-reduce");
    } else if (gn > (w.clip_gradients && holds ? 1 : 0)) {
      error((w.clip_gradients ? "duplicate action GN on rank " : "unexpected action GN on rank ") +
            std::to_string(r) + (w.clip_gradients ? "" : ": the workload clips no gradients"));
    }
  }
}

void CheckPairing(const Schedule& s, std::vector<std::string>* errors) {
  auto error = [&](const std::string& e) { errors->push_back(e); };
  // Every message both sides name: sent by its sender, taken by its
  // receiver.
  std::map<Message, int> sent, taken;
  for (int r = 0; r < s.num_ranks(); ++r) {
    for (const Action& a : s.ranks[r]) {
      if (IsCommunication(a.op)) ++(IsSend(a.op) ? sent : taken)[MessageOf(a, r, 0)];
    }
  }
  for (int r = 0; r < s.num_ranks(); ++r) {
    for (const Action& a : s.ranks[r]) {
      if (a.op == Op::kSumTiedGradients && a.peer != kNoPeer) {
        const Action partner{0, kAllMicrobatches, Op::kSumTiedGradients, a.batch_offset, r};
        bool found = false;
        for (const Action& b : s.ranks[a.peer]) {
          found = found || (b.op == partner.op && b.peer == r && b.batch_offset == a.batch_offset);
        }
        if (!found) {
          error("rank " + std::to_string(r) + ": " + ToString(a) + " has no matching TG~" +
                std::to_string(r) + " on rank " + std::to_string(a.peer));
        }
        continue;
      }
      if (!IsCommunication(a.op)) continue;
      // Traffic the workload has no use for would overwrite what the
      // executor computed: a blockwise student's input (set by the
      // teacher forward), or a local loss's gradient.
      const bool student_activation = a.op == Op::kSendActivation || a.op == Op::kRecvActivation;
      const bool gradient = a.op == Op::kSendGradient || a.op == Op::kRecvGradient;
      if ((student_activation && s.workload.blockwise) ||
          (gradient && s.workload.local_losses)) {
        error("rank " + std::to_string(r) + ": " + ToString(a) + " is not allowed: " +
              (gradient ? "with local losses no gradient crosses a stage boundary"
                        : "a blockwise student reads the teacher's activations, not the "
                          "previous student block's"));
        continue;
      }
      const Message m = MessageOf(a, r, 0);
      if ((IsSend(a.op) ? taken : sent).count(m) == 0) {
        error("rank " + std::to_string(r) + ": " + (IsSend(a.op) ? "send " : "receive ") +
              ToString(a) + " has no matching " + (IsSend(a.op) ? "receive " : "send ") +
              ToString(Partner(a, r)) + " on rank " + std::to_string(a.peer));
      }
    }
  }
  // A stage boundary that crosses ranks needs a receive in front of the
  // consumer: covered by CheckOrder's input rule.
}

std::string CheckMessageOrder(const Schedule& schedule) {
  // (from, to) -> the sender's and the receiver's sequences.
  std::map<std::pair<int, int>, std::pair<std::vector<Action>, std::vector<Action>>> pairs;
  for (int r = 0; r < schedule.num_ranks(); ++r) {
    for (const Action& a : schedule.ranks[r]) {
      if (!IsCommunication(a.op)) continue;
      if (IsSend(a.op)) {
        pairs[{r, a.peer}].first.push_back(a);
      } else {
        pairs[{a.peer, r}].second.push_back(a);
      }
    }
  }
  for (const auto& [ranks, seqs] : pairs) {
    const auto& [sends, recvs] = seqs;
    for (size_t i = 0; i < std::max(sends.size(), recvs.size()); ++i) {
      if (i < sends.size() && i < recvs.size() &&
          MessageOf(sends[i], ranks.first, 0) == MessageOf(recvs[i], ranks.second, 0)) {
        continue;
      }
      std::ostringstream out;
      out << "rank " << ranks.first << "'s sends to rank " << ranks.second << " and rank "
          << ranks.second << "'s receives from rank " << ranks.first << " differ at message "
          << i + 1 << ": " << (i < sends.size() ? ToString(sends[i]) : "(none)") << " vs "
          << (i < recvs.size() ? ToString(recvs[i]) : "(none)");
      return out.str();
    }
  }
  return "";
}

}  // namespace tspipe
