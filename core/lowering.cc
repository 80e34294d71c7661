#include "core/lowering.h"

#include "core/message.h"

#include <algorithm>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace tspipe {
namespace {

// Rank of the replica of `stage` that runs micro-batch `mb`: replicas take
// contiguous shares (ReplicaShare), so groups of any sizes pair up, e.g. a
// Pipe-BD stage on one device feeding the next stage replicated on two.
int OwnerRank(const Schedule& s, int stage, int mb) {
  const auto& group = s.placement[stage];
  for (int i = 0; i < static_cast<int>(group.size()); ++i) {
    int begin, end;
    ReplicaShare(s.num_microbatches, static_cast<int>(group.size()), i, &begin, &end);
    if (mb >= begin && mb < end) return group[i];
  }
  throw std::invalid_argument("LowerCommunication: no replica of stage " + std::to_string(stage) +
                              " runs micro-batch " + std::to_string(mb));
}

// NCCL matches a pair's point-to-point messages in the order they are
// posted, and a receive blocks its rank right before the consumer, so each
// rank's sends to a peer go out in the order the peer receives them: a send
// whose message the peer takes later waits (sends are asynchronous posts)
// until every message the peer takes before it has been sent. This adds no
// wait the receiver would not have had anyway: it cannot take a later
// message before the earlier one.
void OrderSendsLikeReceives(Schedule* schedule) {
  Schedule& s = *schedule;
  // order[from][to] = the messages `to` receives from `from`, in its order.
  std::vector<std::map<int, std::vector<Message>>> order(s.num_ranks());
  for (int r = 0; r < s.num_ranks(); ++r) {
    for (const Action& a : s.ranks[r]) {
      if (IsCommunication(a.op) && !IsSend(a.op) && a.peer >= 0 && a.peer < s.num_ranks()) {
        order[a.peer][r].push_back(MessageOf(a, r, 0));
      }
    }
  }
  for (int r = 0; r < s.num_ranks(); ++r) {
    std::vector<Action> out;
    std::map<int, size_t> next;                       // Peer -> position in its order.
    // Peer -> sends not yet placed (a multimap: a duplicated send, which the
    // validator names, is kept rather than dropped).
    std::map<int, std::multimap<Message, Action>> ready;
    auto flush = [&](int peer) {
      const std::vector<Message>& want = order[r][peer];
      size_t& k = next[peer];
      auto& held = ready[peer];
      while (k < want.size()) {
        auto it = held.find(want[k]);
        if (it == held.end()) break;
        out.push_back(it->second);
        held.erase(it);
        ++k;
      }
    };
    for (const Action& a : s.ranks[r]) {
      if (!IsSend(a.op)) {
        out.push_back(a);
        continue;
      }
      ready[a.peer].emplace(MessageOf(a, r, 0), a);
      flush(a.peer);
    }
    // Messages the peer never receives (an invalid schedule the validator
    // names): in their own order at the end.
    for (const Action& a : s.ranks[r]) {
      if (!IsSend(a.op)) continue;
      auto& held = ready[a.peer];
      auto it = held.find(MessageOf(a, r, 0));
      if (it == held.end()) continue;
      out.push_back(it->second);
      held.erase(it);
    }
    s.ranks[r] = std::move(out);
  }
}

}  // namespace

void CheckComputeOnly(const Schedule& s) {
  for (int r = 0; r < s.num_ranks(); ++r) {
    for (const Action& a : s.ranks[r]) {
      if (!IsCompute(a.op)) {
        throw std::invalid_argument("scheduler '" + s.scheduler + "' emitted " + ToString(a) +
                                    " on rank " + std::to_string(r) +
                                    "; schedulers emit compute actions only, the lowering "
                                    "passes add communication and collectives");
      }
    }
  }
}

void AddGradientReduction(Schedule* schedule) {
  Schedule& s = *schedule;
  if (s.workload.independent_replicas) return;  // Separate models sum nothing.
  for (int r = 0; r < s.num_ranks(); ++r) {
    // Per replicated stage on this rank: where its gradients are final.
    std::map<int, int> last_backward;
    const std::vector<Action>& list = s.ranks[r];
    for (int i = 0; i < static_cast<int>(list.size()); ++i) {
      const Action& a = list[i];
      if (a.stage >= 0 && a.stage < static_cast<int>(s.placement.size()) &&
          s.placement[a.stage].size() > 1 && EndsBackward(a.op)) {
        last_backward[a.stage] = i;
      }
    }
    std::vector<Action> out;
    std::set<int> reduced;
    for (int i = 0; i < static_cast<int>(list.size()); ++i) {
      const Action& a = list[i];
      // A replica without micro-batches of its own still joins, before
      // its step.
      if (a.op == Op::kOptimizerStep && s.placement.at(a.stage).size() > 1 &&
          !reduced.count(a.stage)) {
        out.push_back({a.stage, kAllMicrobatches, Op::kAllReduceGradients});
        reduced.insert(a.stage);
      }
      out.push_back(a);
      auto it = last_backward.find(a.stage);
      if (it != last_backward.end() && it->second == i) {
        out.push_back({a.stage, kAllMicrobatches, Op::kAllReduceGradients});
        reduced.insert(a.stage);
      }
    }
    s.ranks[r] = std::move(out);
  }
}

void LowerCommunication(Schedule* schedule) {
  Schedule& s = *schedule;
  const int last = s.num_stages - 1;
  const bool grads_flow = !s.workload.local_losses;
  // Blockwise: the student reads the teacher's activations; its own do not
  // travel.
  auto travels = [&](Op op) { return op == Op::kTeacherForward || !s.workload.blockwise; };
  // Receives are inserted in front of their consumer; collect them per rank
  // keyed by the consumer action, in the order the consumers appear.
  std::vector<std::vector<Action>> lowered(s.ranks.size());
  // Pending receives for each rank: consumer (stage, mb, op, offset) -> recv.
  using Key = std::tuple<int, int, Op, int>;
  std::vector<std::map<Key, std::vector<Action>>> recv_before(s.ranks.size());

  for (int rank = 0; rank < s.num_ranks(); ++rank) {
    for (const Action& a : s.ranks[rank]) {
      if (IsCommunication(a.op)) {
        throw std::invalid_argument("LowerCommunication: input already has " + ToString(a));
      }
      if ((a.op == Op::kForward || a.op == Op::kTeacherForward) && a.stage < last &&
          travels(a.op)) {
        int peer = OwnerRank(s, a.stage + 1, a.microbatch);
        if (peer != rank) {
          Op consumer = a.op;
          Op recv = a.op == Op::kForward ? Op::kRecvActivation : Op::kRecvTeacherActivation;
          recv_before[peer][{a.stage + 1, a.microbatch, consumer, a.batch_offset}].push_back(
              {a.stage + 1, a.microbatch, recv, a.batch_offset, rank});
        }
      }
      // The consumer of a gradient is the previous stage's B or I, keyed
      // as B (see the lookup below).
      if (GivesInputGradient(a.op) && a.stage > 0 && grads_flow) {
        int peer = OwnerRank(s, a.stage - 1, a.microbatch);
        if (peer != rank) {
          recv_before[peer][{a.stage - 1, a.microbatch, Op::kBackward, a.batch_offset}].push_back(
              {a.stage - 1, a.microbatch, Op::kRecvGradient, a.batch_offset, rank});
        }
      }
    }
  }
  for (int rank = 0; rank < s.num_ranks(); ++rank) {
    for (const Action& a : s.ranks[rank]) {
      const Op consumer = a.op == Op::kBackwardInput ? Op::kBackward : a.op;
      auto it = recv_before[rank].find({a.stage, a.microbatch, consumer, a.batch_offset});
      if (it != recv_before[rank].end()) {
        for (const Action& r : it->second) lowered[rank].push_back(r);
      }
      lowered[rank].push_back(a);
      if ((a.op == Op::kForward || a.op == Op::kTeacherForward) && a.stage < last &&
          travels(a.op)) {
        int peer = OwnerRank(s, a.stage + 1, a.microbatch);
        if (peer != rank) {
          Op send = a.op == Op::kForward ? Op::kSendActivation : Op::kSendTeacherActivation;
          lowered[rank].push_back({a.stage, a.microbatch, send, a.batch_offset, peer});
        }
      }
      if (GivesInputGradient(a.op) && a.stage > 0 && grads_flow) {
        int peer = OwnerRank(s, a.stage - 1, a.microbatch);
        if (peer != rank) {
          lowered[rank].push_back({a.stage, a.microbatch, Op::kSendGradient, a.batch_offset, peer});
        }
      }
    }
  }
  s.ranks = std::move(lowered);
  OrderSendsLikeReceives(&s);
}

std::vector<int> ReplicaRanks(const Schedule& s, int replica) {
  std::vector<int> out;
  for (const std::vector<int>& ranks : s.placement) {
    if (replica >= static_cast<int>(ranks.size())) continue;
    const int r = ranks[replica];
    if (std::find(out.begin(), out.end(), r) == out.end()) out.push_back(r);
  }
  return out;
}

void AddGradientSync(Schedule* schedule) {
  Schedule& s = *schedule;
  const Workload& w = s.workload;
  if (w.tied_stages.empty() && !w.clip_gradients) return;
  const int n = s.num_stages;
  // (rank, peer) -> the lowest stage of the rank in a tie with the peer.
  std::map<std::pair<int, int>, int> ties;
  for (const auto& [a, b] : w.tied_stages) {
    for (int st : {a, b}) {
      if (st < 0 || st >= n) {
        throw std::invalid_argument("a tied parameter names stage " + std::to_string(st) +
                                    " of a " + std::to_string(n) + "-stage schedule");
      }
    }
    if (s.placement[a].size() != s.placement[b].size()) {
      throw std::invalid_argument("stages " + std::to_string(a) + " and " + std::to_string(b) +
                                  " share a tied parameter but have different replica counts");
    }
    for (size_t rep = 0; rep < s.placement[a].size(); ++rep) {
      const int ra = s.placement[a][rep], rb = s.placement[b][rep];
      auto note = [&](int rank, int peer, int stage) {
        auto [it, fresh] = ties.emplace(std::make_pair(rank, peer), stage);
        if (!fresh) it->second = std::min(it->second, stage);
      };
      if (ra == rb) {
        note(ra, kNoPeer, std::min(a, b));
      } else {
        note(ra, rb, a);
        note(rb, ra, b);
      }
    }
  }
  // Which replica each rank's stages belong to.
  std::vector<int> replica(s.num_ranks(), -1);
  for (int r = 0; r < s.num_ranks(); ++r) {
    for (int st : s.StagesOnRank(r)) {
      const int rep = s.ReplicaIndex(st, r);
      if (w.clip_gradients && replica[r] >= 0 && replica[r] != rep) {
        throw std::invalid_argument("rank " + std::to_string(r) +
                                    " holds stages of different replicas; clipping by the global "
                                    "norm needs one model per rank");
      }
      replica[r] = rep;
    }
  }
  if (w.clip_gradients) {
    for (const std::vector<int>& p : s.placement) {
      if (p.size() != s.placement[0].size()) {
        throw std::invalid_argument("gradient clipping needs every stage with the same replica "
                                    "count; schedule '" + s.scheduler + "' varies them");
      }
    }
  }
  for (int r = 0; r < s.num_ranks(); ++r) {
    std::vector<Action> sync;
    for (const auto& [key, stage] : ties) {  // Ascending by (rank, peer).
      if (key.first == r) sync.push_back({stage, kAllMicrobatches, Op::kSumTiedGradients, 0, key.second});
    }
    const std::vector<int> stages = s.StagesOnRank(r);
    if (w.clip_gradients && !stages.empty()) {
      sync.push_back({stages.front(), kAllMicrobatches, Op::kClipGradients});
    }
    if (sync.empty()) continue;
    std::vector<Action>& list = s.ranks[r];
    int last_backward = -1, first_step = -1;
    for (int i = 0; i < static_cast<int>(list.size()); ++i) {
      const Op op = list[i].op;
      if (op == Op::kBackward || op == Op::kBackwardInput || op == Op::kBackwardWeight ||
          op == Op::kSendGradient || op == Op::kAllReduceGradients) {
        last_backward = i;
      }
      if (op == Op::kOptimizerStep && first_step < 0) first_step = i;
    }
    const int at = last_backward >= 0 ? last_backward + 1
                   : first_step >= 0  ? first_step
                                      : static_cast<int>(list.size());
    list.insert(list.begin() + at, sync.begin(), sync.end());
  }
}

void Lower(Schedule* schedule) {
  CheckComputeOnly(*schedule);
  AddGradientReduction(schedule);
  LowerCommunication(schedule);
  AddGradientSync(schedule);
}

}  // namespace tspipe
