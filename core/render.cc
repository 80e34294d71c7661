#include "core/render.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace tspipe {

std::string FormatGrid(const Schedule& s, const SimulationResult& r, double slot) {
  std::ostringstream out;
  if (r.deadlocked) return "deadlock:\n" + r.deadlock_report;
  const int slots = static_cast<int>(std::ceil(r.makespan / slot - 1e-9));
  std::vector<std::vector<std::string>> cells(slots, std::vector<std::string>(s.num_ranks(), "."));
  size_t width = 4;
  for (int rank = 0; rank < s.num_ranks(); ++rank) {
    for (size_t i = 0; i < s.ranks[rank].size(); ++i) {
      const Action& a = s.ranks[rank][i];
      const ActionTiming& t = r.timings[rank][i];
      if (!IsCompute(a.op) && a.op != Op::kAllReduceGradients) continue;
      if (t.end <= t.start) continue;
      for (int k = 0; k < slots; ++k) {
        double mid = (k + 0.5) * slot;
        if (mid >= t.start && mid < t.end) {
          cells[k][rank] = ToString(a);
          width = std::max(width, cells[k][rank].size());
        }
      }
    }
  }
  char buf[32];
  out << "step ";
  for (int rank = 0; rank < s.num_ranks(); ++rank) {
    std::string h = "r" + std::to_string(rank);
    out << " " << h << std::string(width - h.size(), ' ');
  }
  out << "\n";
  for (int k = 0; k < slots; ++k) {
    std::snprintf(buf, sizeof(buf), "%4d ", k);
    out << buf;
    for (int rank = 0; rank < s.num_ranks(); ++rank) {
      out << " " << cells[k][rank] << std::string(width - cells[k][rank].size(), ' ');
    }
    out << "\n";
  }
  return out.str();
}

namespace {

const char* Colour(Op op) {
  switch (op) {
    case Op::kForward: return "#4e79a7";
    case Op::kTeacherForward: return "#f28e2b";
    case Op::kBackward: return "#59a14f";
    case Op::kBackwardInput: return "#8cd17d";
    case Op::kBackwardWeight: return "#2f6b2a";
    case Op::kLoss: return "#e15759";
    case Op::kOptimizerStep: return "#b07aa1";
    case Op::kTeacherUpdate: return "#9c755f";
    case Op::kAllReduceGradients: return "#bab0ac";
    default: return "#cccccc";
  }
}

}  // namespace

std::string TimelineSvg(const Schedule& s, const SimulationResult& r, const TimelineStyle& style) {
  const double lane = 36, left = 60, top = 40, width = 960;
  const double span = style.time_span > 0 ? style.time_span : r.makespan;
  const double scale = span > 0 ? width / span : 1;
  std::ostringstream out;
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << left + width + 20
      << "\" height=\"" << top + lane * s.num_ranks() + 40
      << "\" font-family=\"monospace\" font-size=\"11\">\n";
  char title[512];
  const std::string unit = style.unit.empty() ? "" : " " + style.unit;
  std::snprintf(title, sizeof(title),
                "%s: %d stages, %d micro-batches, makespan %.4g%s, bubble %.1f%%",
                (style.title.empty() ? s.scheduler : style.title).c_str(), s.num_stages,
                s.num_microbatches, r.makespan, unit.c_str(), 100 * r.BubbleFraction());
  out << "<text x=\"" << left << "\" y=\"20\" font-size=\"14\">" << title << "</text>\n";
  for (int rank = 0; rank < s.num_ranks(); ++rank) {
    double y = top + rank * lane;
    out << "<text x=\"5\" y=\"" << y + lane / 2 + 4 << "\">rank " << rank << "</text>\n";
    for (size_t i = 0; i < s.ranks[rank].size(); ++i) {
      const Action& a = s.ranks[rank][i];
      const ActionTiming& t = r.timings[rank][i];
      if (t.end <= t.start) continue;
      double x = left + t.start * scale, w = (t.end - t.start) * scale;
      out << "<rect x=\"" << x << "\" y=\"" << y + 2 << "\" width=\"" << w
          << "\" height=\"" << lane - 4 << "\" fill=\"" << Colour(a.op)
          << "\" stroke=\"white\"><title>" << ToString(a) << "</title></rect>\n";
      if (w > 22) {
        out << "<text x=\"" << x + 3 << "\" y=\"" << y + lane / 2 + 4
            << "\" fill=\"white\">" << ToString(a) << "</text>\n";
      }
    }
  }
  double ly = top + lane * s.num_ranks() + 20;
  double lx = left;
  bool split = false;
  for (const auto& list : s.ranks) {
    for (const Action& a : list) split = split || a.op == Op::kBackwardInput;
  }
  std::vector<Op> legend = {Op::kForward, Op::kTeacherForward, Op::kBackward};
  if (split) legend = {Op::kForward, Op::kTeacherForward, Op::kBackwardInput, Op::kBackwardWeight};
  for (Op op : {Op::kLoss, Op::kOptimizerStep, Op::kTeacherUpdate}) legend.push_back(op);
  for (Op op : legend) {
    out << "<rect x=\"" << lx << "\" y=\"" << ly - 10 << "\" width=\"12\" height=\"12\" fill=\""
        << Colour(op) << "\"/><text x=\"" << lx + 16 << "\" y=\"" << ly << "\">"
        << OpName(op) << "</text>\n";
    lx += 140;
  }
  out << "</svg>\n";
  return out.str();
}

}  // namespace tspipe
