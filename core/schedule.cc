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
  if (!one.workload.teacher_updates()) {
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
  s.workload.teacher = TeacherKind::kPeers;
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
  const Workload& w = s.workload;
  out << "# workload=" << (w.has_teacher() ? "teacher" : "no_teacher")
      << (w.teacher_updates() ? ",teacher_updates" : "") << (w.local_losses ? ",local_losses" : "")
      << (w.blockwise ? ",blockwise" : "") << (w.full_batch_loss ? ",full_batch_loss" : "")
      << (w.independent_replicas ? ",independent_replicas" : "")
      // Separate models imply peer teachers; one model's are named.
      << (w.teacher == TeacherKind::kPeers && !w.independent_replicas ? ",peer_teacher" : "")
      << (w.clip_gradients ? ",clip_gradients" : "");
  if (!w.tied_stages.empty()) {
    out << ",tied=";
    for (size_t i = 0; i < w.tied_stages.size(); ++i) {
      out << (i ? ";" : "") << w.tied_stages[i].first << "-" << w.tied_stages[i].second;
    }
  }
  out << "\n";
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
        bool teacher = false, updates = false, peers = false;
        for (const std::string& w : Split(value, ',')) {
          if (w == "teacher") teacher = true;
          else if (w == "no_teacher") teacher = false;
          else if (w == "teacher_updates") updates = true;
          else if (w == "local_losses") s.workload.local_losses = true;
          else if (w == "blockwise") s.workload.blockwise = true;
          else if (w == "full_batch_loss") s.workload.full_batch_loss = true;
          else if (w == "independent_replicas") s.workload.independent_replicas = true;
          else if (w == "clip_gradients") s.workload.clip_gradients = true;
          else if (w == "peer_teacher") peers = true;
          else if (w.rfind("tied=", 0) == 0) {
            for (const std::string& pair : Split(w.substr(5), ';')) {
              const size_t dash = pair.find('-');
              int a = 0, b = 0;
              if (dash == std::string::npos || !ToInt(pair.substr(0, dash), &a) ||
                  !ToInt(pair.substr(dash + 1), &b)) {
                return fail("bad tied stage pair '" + pair + "' (expected a-b)");
              }
              s.workload.tied_stages.emplace_back(a, b);
            }
          } else {
            return fail("unknown workload flag '" + w + "'");
          }
        }
        // The CSV names how the teacher behaves in the schedule; separate
        // models' teachers are their peers.
        s.workload.teacher = !teacher ? TeacherKind::kNone
                             : !updates ? TeacherKind::kFrozen
                             : s.workload.independent_replicas || peers ? TeacherKind::kPeers
                                                                        : TeacherKind::kMomentum;
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
