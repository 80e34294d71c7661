#include "core/schedule.h"

#include <algorithm>
#include <map>
#include <sstream>
#include <stdexcept>
#include <tuple>

namespace tspipe {

std::vector<int> Schedule::StagesOnRank(int rank) const {
  std::vector<int> stages;
  for (int s = 0; s < static_cast<int>(placement.size()); ++s) {
    if (ReplicaIndex(s, rank) >= 0) stages.push_back(s);
  }
  return stages;
}

int Schedule::ReplicaIndex(int stage, int rank) const {
  if (stage < 0 || stage >= static_cast<int>(placement.size())) return -1;
  const auto& group = placement[stage];
  auto it = std::find(group.begin(), group.end(), rank);
  return it == group.end() ? -1 : static_cast<int>(it - group.begin());
}

void ReplicaShare(int n, int replicas, int replica, int* begin, int* end) {
  int base = n / replicas;
  int extra = n % replicas;
  *begin = replica * base + std::min(replica, extra);
  *end = *begin + base + (replica < extra ? 1 : 0);
}

std::vector<int> Schedule::MicrobatchesOf(int stage, int rank) const {
  int replica = ReplicaIndex(stage, rank);
  std::vector<int> mbs;
  if (replica < 0) return mbs;
  int begin, end;
  ReplicaShare(num_microbatches, static_cast<int>(placement[stage].size()),
               replica, &begin, &end);
  for (int m = begin; m < end; ++m) mbs.push_back(m);
  return mbs;
}

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

}  // namespace

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
        throw std::invalid_argument("LowerCommunication: input already has " +
                                    ToString(a));
      }
      if ((a.op == Op::kForward || a.op == Op::kTeacherForward) && a.stage < last &&
          travels(a.op)) {
        int peer = OwnerRank(s, a.stage + 1, a.microbatch);
        if (peer != rank) {
          Op consumer = a.op;
          Op recv = a.op == Op::kForward ? Op::kRecvActivation
                                         : Op::kRecvTeacherActivation;
          recv_before[peer][{a.stage + 1, a.microbatch, consumer, a.batch_offset}]
              .push_back({a.stage + 1, a.microbatch, recv, a.batch_offset, rank});
        }
      }
      // The consumer of a gradient is the previous stage's B or I, keyed
      // as B (see the lookup below).
      if (GivesInputGradient(a.op) && a.stage > 0 && grads_flow) {
        int peer = OwnerRank(s, a.stage - 1, a.microbatch);
        if (peer != rank) {
          recv_before[peer][{a.stage - 1, a.microbatch, Op::kBackward, a.batch_offset}]
              .push_back({a.stage - 1, a.microbatch, Op::kRecvGradient,
                          a.batch_offset, rank});
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
          Op send = a.op == Op::kForward ? Op::kSendActivation
                                         : Op::kSendTeacherActivation;
          lowered[rank].push_back({a.stage, a.microbatch, send, a.batch_offset, peer});
        }
      }
      if (GivesInputGradient(a.op) && a.stage > 0 && grads_flow) {
        int peer = OwnerRank(s, a.stage - 1, a.microbatch);
        if (peer != rank) {
          lowered[rank].push_back(
              {a.stage, a.microbatch, Op::kSendGradient, a.batch_offset, peer});
        }
      }
    }
  }
  s.ranks = std::move(lowered);
}

Schedule TeacherPrologue(const Schedule& s) {
  Schedule p = s;
  bool any = false;
  for (auto& actions : p.ranks) {
    std::vector<Action> kept;
    for (Action a : actions) {
      bool teacher = a.op == Op::kTeacherForward || a.op == Op::kSendTeacherActivation ||
                     a.op == Op::kRecvTeacherActivation;
      if (teacher && a.batch_offset == 1) {
        a.batch_offset = 0;
        kept.push_back(a);
        any = true;
      }
    }
    actions = std::move(kept);
  }
  if (!any) {
    for (auto& actions : p.ranks) actions.clear();
  }
  return p;
}

Schedule ReplicateModels(const Schedule& one, int n) {
  if (n < 2) {
    throw std::invalid_argument("several models need at least 2, got " + std::to_string(n));
  }
  for (int st = 0; st < one.num_stages; ++st) {
    if (one.placement.at(st).size() != 1) {
      throw std::invalid_argument(
          "each model runs on its own pipeline, one rank per stage, but '" + one.scheduler +
          "' replicates stage " + std::to_string(st) +
          "; use sequential (one device per model), gpipe or tspipe");
    }
  }
  if (!one.workload.has_teacher || !one.workload.teacher_updates) {
    throw std::invalid_argument(
        "models that teach each other need a teacher updated from the others (the exchange)");
  }
  const int ranks = one.num_ranks(), m = one.num_microbatches;
  Schedule s;
  s.scheduler = one.scheduler;
  s.num_stages = one.num_stages;
  s.num_microbatches = n * m;
  s.workload = one.workload;
  s.workload.independent_replicas = true;
  s.placement.resize(one.num_stages);
  for (int g = 0; g < n; ++g) {
    for (int st = 0; st < one.num_stages; ++st) {
      s.placement[st].push_back(one.placement[st][0] + g * ranks);
    }
  }
  s.ranks.resize(static_cast<size_t>(n) * ranks);
  for (int g = 0; g < n; ++g) {
    for (int r = 0; r < ranks; ++r) {
      std::vector<Action>& out = s.ranks[g * ranks + r];
      for (Action a : one.ranks[r]) {
        if (a.microbatch != kAllMicrobatches) a.microbatch += g * m;
        if (a.peer != kNoPeer) a.peer += g * ranks;
        out.push_back(a);
      }
    }
  }
  return s;
}

std::string FormatPlacement(const Schedule& s) {
  std::ostringstream out;
  for (size_t st = 0; st < s.placement.size(); ++st) {
    if (st) out << ";";
    for (size_t i = 0; i < s.placement[st].size(); ++i) {
      if (i) out << "|";
      out << s.placement[st][i];
    }
  }
  return out.str();
}

std::string ToCsv(const Schedule& s) {
  std::ostringstream out;
  out << "# scheduler=" << s.scheduler << "\n";
  out << "# stages=" << s.num_stages << "\n";
  out << "# microbatches=" << s.num_microbatches << "\n";
  out << "# workload=" << (s.workload.has_teacher ? "teacher" : "no_teacher")
      << (s.workload.teacher_updates ? ",teacher_updates" : "")
      << (s.workload.local_losses ? ",local_losses" : "")
      << (s.workload.blockwise ? ",blockwise" : "")
      << (s.workload.full_batch_loss ? ",full_batch_loss" : "")
      << (s.workload.independent_replicas ? ",independent_replicas" : "") << "\n";
  out << "# placement=" << FormatPlacement(s) << "\n";
  for (int r = 0; r < s.num_ranks(); ++r) {
    out << r;
    for (const Action& a : s.ranks[r]) out << "," << ToString(a);
    out << "\n";
  }
  return out.str();
}

namespace {

std::vector<std::string> Split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  std::string cur;
  std::istringstream in(text);
  while (std::getline(in, cur, sep)) parts.push_back(cur);
  if (!text.empty() && text.back() == sep) parts.push_back("");
  return parts;
}

bool ToInt(const std::string& text, int* value) {
  if (text.empty()) return false;
  size_t used = 0;
  try {
    *value = std::stoi(text, &used);
  } catch (const std::exception&) {
    return false;
  }
  return used == text.size();
}

}  // namespace

bool FromCsv(const std::string& csv, Schedule* schedule, std::string* error) {
  Schedule s;
  std::istringstream in(csv);
  std::string line;
  int line_no = 0;
  auto fail = [&](const std::string& why) {
    *error = "schedule CSV line " + std::to_string(line_no) + ": " + why;
    return false;
  };
  bool has_workload = false;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::string body = line.substr(1);
      body.erase(0, body.find_first_not_of(' '));
      size_t eq = body.find('=');
      // "# key=value" is a header; anything else (e.g. prose) is a comment.
      if (eq == std::string::npos || eq == 0 || body.substr(0, eq).find(' ') != std::string::npos) {
        continue;
      }
      std::string key = body.substr(0, eq), value = body.substr(eq + 1);
      if (key == "scheduler") {
        s.scheduler = value;
      } else if (key == "stages") {
        if (!ToInt(value, &s.num_stages)) return fail("bad stage count '" + value + "'");
      } else if (key == "microbatches") {
        if (!ToInt(value, &s.num_microbatches)) {
          return fail("bad micro-batch count '" + value + "'");
        }
      } else if (key == "workload") {
        has_workload = true;
        s.workload = Workload{};
        s.workload.full_batch_loss = false;
        for (const std::string& w : Split(value, ',')) {
          if (w == "teacher") s.workload.has_teacher = true;
          else if (w == "no_teacher") s.workload.has_teacher = false;
          else if (w == "teacher_updates") s.workload.teacher_updates = true;
          else if (w == "local_losses") s.workload.local_losses = true;
          else if (w == "blockwise") s.workload.blockwise = true;
          else if (w == "full_batch_loss") s.workload.full_batch_loss = true;
          else if (w == "independent_replicas") s.workload.independent_replicas = true;
          else return fail("unknown workload flag '" + w + "'");
        }
      } else if (key == "placement") {
        for (const std::string& group : Split(value, ';')) {
          std::vector<int> ranks;
          for (const std::string& r : Split(group, '|')) {
            int rank;
            if (!ToInt(r, &rank) || rank < 0) return fail("bad rank '" + r + "' in placement");
            ranks.push_back(rank);
          }
          s.placement.push_back(ranks);
        }
      } else {
        return fail("unknown header '" + key + "'");
      }
      continue;
    }
    std::vector<std::string> cells = Split(line, ',');
    int rank;
    if (!ToInt(cells[0], &rank)) return fail("expected a rank number, got '" + cells[0] + "'");
    if (rank != s.num_ranks()) {
      return fail("rank " + std::to_string(rank) + " out of order (expected " +
                  std::to_string(s.num_ranks()) + ")");
    }
    s.ranks.emplace_back();
    for (size_t i = 1; i < cells.size(); ++i) {
      if (cells[i].empty()) continue;
      Action a;
      std::string why;
      if (!ParseAction(cells[i], &a, &why)) return fail(why);
      s.ranks.back().push_back(a);
    }
  }
  if (!has_workload) s.workload = Workload{};
  if (s.num_stages <= 0) return fail("missing '# stages=' header");
  if (static_cast<int>(s.placement.size()) != s.num_stages) {
    return fail("placement lists " + std::to_string(s.placement.size()) +
                " stages, header says " + std::to_string(s.num_stages));
  }
  *schedule = std::move(s);
  return true;
}

}  // namespace tspipe
