#include "core/trace.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "core/message.h"
#include "core/render.h"

namespace tspipe {
namespace {

using nlohmann::json;

bool IsComputeEvent(const TraceEvent& e) {
  return IsCompute(e.action.op);
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The distinct steps of the run's main-list events, ascending.
std::vector<int64_t> Steps(const TraceRun& run) {
  std::set<int64_t> steps;
  for (const TraceEvent& e : run.events) {
    if (e.kind != TraceEvent::Kind::kPrologue) steps.insert(e.step);
  }
  return {steps.begin(), steps.end()};
}

// Pairs each send with the receive that took its message: index of the
// send event -> index of the receive event. A message is named the same way
// by both sides (MessageOf); several with one name match in order.
std::vector<std::pair<size_t, size_t>> MatchMessages(const std::vector<TraceEvent>& events) {
  std::vector<size_t> order(events.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return events[a].start_us < events[b].start_us;
  });
  std::map<Message, std::deque<size_t>> sends, recvs;
  std::vector<std::pair<size_t, size_t>> flows;
  for (size_t i : order) {
    const TraceEvent& e = events[i];
    if (!IsCommunication(e.action.op)) continue;
    const Message key = MessageOf(e.action, e.rank, e.step);
    const bool send = IsSend(e.action.op);
    auto& other = send ? recvs[key] : sends[key];
    if (!other.empty()) {
      flows.push_back(send ? std::make_pair(i, other.front()) : std::make_pair(other.front(), i));
      other.pop_front();
    } else {
      (send ? sends[key] : recvs[key]).push_back(i);
    }
  }
  return flows;
}

std::string Category(const TraceEvent& e) {
  if (IsCommunication(e.action.op)) return "message";
  if (IsCollective(e.action.op)) return "collective";
  return std::string(OpName(e.action.op));
}

// The run's main-list events of steps [first, last], as an unrolled schedule
// (copy i = step first + i) and its measured timings relative to `origin`;
// only compute actions get a duration, as in the simulator's pictures.
SimulationResult MeasuredResult(const TraceRun& run, int64_t first, int64_t last, double origin,
                                Schedule* unrolled) {
  const int copies = static_cast<int>(last - first + 1);
  *unrolled = Unroll(run.schedule, copies);
  SimulationResult r;
  const int ranks = run.schedule.num_ranks();
  r.busy.assign(ranks, 0);
  r.timings.resize(ranks);
  for (int rank = 0; rank < ranks; ++rank) r.timings[rank].assign(unrolled->ranks[rank].size(), {});
  for (const TraceEvent& e : run.events) {
    if (e.kind != TraceEvent::Kind::kAction || e.step < first || e.step > last) continue;
    if (e.rank < 0 || e.rank >= ranks) continue;
    const size_t len = run.schedule.ranks[e.rank].size();
    const size_t at = static_cast<size_t>(e.step - first) * len + static_cast<size_t>(e.index);
    if (at >= r.timings[e.rank].size()) continue;
    r.makespan = std::max(r.makespan, e.end_us - origin);
    if (!IsComputeEvent(e)) continue;
    r.timings[e.rank][at] = {e.start_us - origin, e.end_us - origin};
    r.busy[e.rank] += e.end_us - e.start_us;
  }
  return r;
}

}  // namespace

std::string EventName(const TraceEvent& e) {
  return ToString(e.action);
}

std::string ChromeTraceJson(const std::vector<TraceRun>& runs) {
  double origin = std::numeric_limits<double>::infinity();
  for (const TraceRun& run : runs) {
    for (const TraceEvent& e : run.events) origin = std::min(origin, e.start_us);
    for (const auto& w : run.data_waits) origin = std::min(origin, w.first);
  }
  if (!std::isfinite(origin)) origin = 0;
  json events = json::array();
  int64_t flow_id = 0;
  for (size_t pid = 0; pid < runs.size(); ++pid) {
    const TraceRun& run = runs[pid];
    events.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", pid}, {"tid", 0},
                      {"args", {{"name", run.name}}}});
    events.push_back({{"name", "process_sort_index"}, {"ph", "M"}, {"pid", pid}, {"tid", 0},
                      {"args", {{"sort_index", pid}}}});
    for (int rank = 0; rank < run.schedule.num_ranks(); ++rank) {
      events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", pid}, {"tid", rank},
                        {"args", {{"name", "rank " + std::to_string(rank)}}}});
    }
    if (!run.data_waits.empty()) {
      const int data_tid = run.schedule.num_ranks();
      events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", pid}, {"tid", data_tid},
                        {"args", {{"name", "data (waits for the loader)"}}}});
      for (const auto& [start, end] : run.data_waits) {
        events.push_back({{"name", "data wait"}, {"cat", "data"}, {"ph", "X"}, {"pid", pid},
                          {"tid", data_tid}, {"ts", start - origin},
                          {"dur", std::max(0.0, end - start)}});
      }
    }
    for (const TraceEvent& e : run.events) {
      json args = {{"step", e.step}};
      if (e.kind == TraceEvent::Kind::kPrologue) args["list"] = "prologue";
      if (e.held_bytes != 0) args["held_bytes"] = e.held_bytes;
      events.push_back({{"name", EventName(e)}, {"cat", Category(e)}, {"ph", "X"}, {"pid", pid},
                        {"tid", e.rank}, {"ts", e.start_us - origin},
                        {"dur", std::max(0.0, e.end_us - e.start_us)}, {"args", args}});
    }
    // Flow events bind to the slice around their timestamp on their track:
    // the send's start and the receive's end lie inside their own slices.
    for (const auto& [send, recv] : MatchMessages(run.events)) {
      const TraceEvent& s = run.events[send];
      const TraceEvent& r = run.events[recv];
      const std::string name = "message " + ToString(s.action);
      events.push_back({{"name", name}, {"cat", "message"}, {"ph", "s"}, {"id", flow_id},
                        {"pid", pid}, {"tid", s.rank}, {"ts", s.start_us - origin}});
      events.push_back({{"name", name}, {"cat", "message"}, {"ph", "f"}, {"bp", "e"},
                        {"id", flow_id}, {"pid", pid}, {"tid", r.rank},
                        {"ts", std::max(s.start_us, r.end_us) - origin}});
      ++flow_id;
    }
  }
  json doc = {{"traceEvents", events}, {"displayTimeUnit", "ms"}};
  return doc.dump(1) + "\n";
}

TraceSummary SummarizeTrace(const TraceRun& run) {
  const std::vector<int64_t> steps = Steps(run);
  if (steps.size() < 3) {
    throw std::invalid_argument("a trace summary needs at least 3 recorded steps (fill, steady, "
                                "drain); " + run.name + " recorded " +
                                std::to_string(steps.size()));
  }
  const int64_t first = steps[1], last = steps.back();
  const int ranks = run.schedule.num_ranks();
  // Each rank's window: its first action of step `first` to its first
  // action of step `last`.
  std::vector<double> begin(ranks, std::numeric_limits<double>::infinity()), end = begin;
  for (const TraceEvent& e : run.events) {
    if (e.kind == TraceEvent::Kind::kPrologue || e.rank < 0 || e.rank >= ranks) continue;
    if (e.step == first) begin[e.rank] = std::min(begin[e.rank], e.start_us);
    if (e.step == last) end[e.rank] = std::min(end[e.rank], e.start_us);
  }
  TraceSummary out;
  out.steady_steps = static_cast<int>(last - first);
  double window = 0, busy = 0;
  for (int r = 0; r < ranks; ++r) {
    if (!std::isfinite(begin[r]) || !std::isfinite(end[r])) {
      throw std::invalid_argument("rank " + std::to_string(r) + " recorded no actions of steps " +
                                  std::to_string(first + 1) + " and " + std::to_string(last + 1));
    }
    window += end[r] - begin[r];
  }
  std::map<Op, std::vector<double>> by_op;
  std::map<std::pair<Op, int>, std::vector<double>> by_stage;
  // Bytes held by forwards and teacher forwards (metered runs).
  std::map<std::pair<Op, int>, std::vector<double>> held;
  for (const TraceEvent& e : run.events) {
    if (e.kind != TraceEvent::Kind::kAction || !IsComputeEvent(e)) continue;
    if (e.rank < 0 || e.rank >= ranks) continue;
    busy += std::max(0.0, std::min(e.end_us, end[e.rank]) - std::max(e.start_us, begin[e.rank]));
    if (e.step < first || e.step >= last) continue;
    by_op[e.action.op].push_back(e.end_us - e.start_us);
    by_stage[{e.action.op, e.action.stage}].push_back(e.end_us - e.start_us);
    if (e.held_bytes != 0) {
      held[{e.action.op, e.action.stage}].push_back(static_cast<double>(e.held_bytes));
    }
  }
  out.period_us = window / ranks / out.steady_steps;
  out.bubble = window > 0 ? 1 - busy / window : 0;
  CostModel& c = out.costs;
  c.forward = Median(by_op[Op::kForward]);
  c.teacher_forward = Median(by_op[Op::kTeacherForward]);
  c.backward = Median(by_op[Op::kBackward]);
  // Without split backwards recorded, the halves stay "half of B".
  if (!by_op[Op::kBackwardInput].empty()) c.backward_input = Median(by_op[Op::kBackwardInput]);
  if (!by_op[Op::kBackwardWeight].empty()) c.backward_weight = Median(by_op[Op::kBackwardWeight]);
  c.loss = Median(by_op[Op::kLoss]);
  c.optimizer_step = Median(by_op[Op::kOptimizerStep]);
  c.teacher_update = Median(by_op[Op::kTeacherUpdate]);
  c.all_reduce = 0;
  c.message = 0;
  const int stages = run.schedule.num_stages;
  auto per_stage = [&](Op op, double fallback) {
    std::vector<double> v(stages, fallback);
    for (int s = 0; s < stages; ++s) {
      auto it = by_stage.find({op, s});
      if (it != by_stage.end()) v[s] = Median(it->second);
    }
    return v;
  };
  c.forward_per_stage = per_stage(Op::kForward, c.forward);
  c.teacher_forward_per_stage = per_stage(Op::kTeacherForward, c.teacher_forward);
  c.backward_per_stage = per_stage(Op::kBackward, c.backward);
  if (!by_op[Op::kBackwardInput].empty()) {
    c.backward_input_per_stage = per_stage(Op::kBackwardInput, c.backward_input);
    c.backward_weight_per_stage = per_stage(Op::kBackwardWeight, c.backward_weight);
  }
  const SteadyState predicted = SimulateSteadyState(run.schedule, c);
  if (!predicted.deadlocked) {
    out.predicted_period_us = predicted.period;
    out.predicted_bubble = predicted.bubble_fraction;
  }
  if (!held.empty()) {
    auto bytes = [&](Op op) {
      std::vector<double> v(stages, 0.0);
      for (int s = 0; s < stages; ++s) {
        auto it = held.find({op, s});
        if (it != held.end()) v[s] = std::max(0.0, Median(it->second));
      }
      return v;
    };
    out.forward_bytes = bytes(Op::kForward);
    out.teacher_bytes = bytes(Op::kTeacherForward);
    out.predicted_stash_bytes =
        StashBytes(PeakStashes(run.schedule), out.forward_bytes, out.teacher_bytes);
  }
  return out;
}

std::string MeasuredTimelineSvg(const std::vector<TraceRun>& runs) {
  // Each picture is an SVG of its own (TimelineSvg), nested at an offset.
  std::vector<std::pair<std::string, double>> pictures;  // svg, height
  for (const TraceRun& run : runs) {
    const std::vector<int64_t> steps = Steps(run);
    if (steps.empty()) continue;
    double origin = std::numeric_limits<double>::infinity();
    for (const TraceEvent& e : run.events) {
      if (e.kind == TraceEvent::Kind::kAction) origin = std::min(origin, e.start_us);
    }
    Schedule unrolled;
    SimulationResult measured = MeasuredResult(run, steps.front(), steps.back(), origin, &unrolled);
    CostModel costs;  // Unit costs when the run is too short to measure them.
    if (steps.size() >= 3) {
      try {
        costs = SummarizeTrace(run).costs;
      } catch (const std::invalid_argument&) {
      }
    }
    SimulationResult simulated = Simulate(unrolled, costs);
    // Compute only, as in the measured picture (waiting receives would be
    // boxes there).
    for (int r = 0; r < unrolled.num_ranks() && !simulated.deadlocked; ++r) {
      for (size_t i = 0; i < unrolled.ranks[r].size(); ++i) {
        if (!IsCompute(unrolled.ranks[r][i].op)) simulated.timings[r][i].end = simulated.timings[r][i].start;
      }
    }
    const double span = std::max(measured.makespan, simulated.makespan);
    const std::string steps_text = std::to_string(steps.size()) + " steps";
    TimelineStyle style;
    style.time_span = span;
    style.unit = "us";
    style.title = run.name + ", measured (" + steps_text + ")";
    pictures.emplace_back(TimelineSvg(unrolled, measured, style), 0);
    style.title = run.name + ", simulated from the measured costs (" + steps_text + ")";
    pictures.emplace_back(TimelineSvg(unrolled, simulated, style), 0);
    const double height = 40 + 36.0 * run.schedule.num_ranks() + 40;
    pictures[pictures.size() - 1].second = height;
    pictures[pictures.size() - 2].second = height;
  }
  double total = 0;
  for (const auto& p : pictures) total += p.second;
  std::ostringstream out;
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1040\" height=\"" << total
      << "\">\n";
  double y = 0;
  for (const auto& [svg, height] : pictures) {
    // A nested <svg> element placed at y: the picture's own root, moved.
    out << "<g transform=\"translate(0," << y << ")\">\n" << svg << "</g>\n";
    y += height;
  }
  out << "</svg>\n";
  return out.str();
}

std::string CheckChromeTrace(const std::string& text) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::exception& e) {
    return std::string("not JSON: ") + e.what();
  }
  if (!doc.is_object() || !doc.contains("traceEvents") || !doc["traceEvents"].is_array()) {
    return "no traceEvents array";
  }
  std::map<int64_t, double> starts;
  std::set<int64_t> finished;
  size_t i = 0;
  for (const json& e : doc["traceEvents"]) {
    const std::string where = "event " + std::to_string(i++);
    if (!e.is_object()) return where + " is not an object";
    for (const char* key : {"name", "ph", "pid", "tid"}) {
      if (!e.contains(key)) return where + " has no \"" + key + "\"";
    }
    if (!e["name"].is_string() || !e["ph"].is_string()) return where + ": name/ph not strings";
    if (!e["pid"].is_number_integer() || !e["tid"].is_number_integer()) {
      return where + ": pid/tid not integers";
    }
    const std::string ph = e["ph"];
    if (ph == "M") {
      if (!e.contains("args") || !e["args"].is_object()) return where + ": metadata without args";
      continue;
    }
    if (ph != "X" && ph != "s" && ph != "f") return where + ": unexpected phase " + ph;
    if (!e.contains("ts") || !e["ts"].is_number() || e["ts"].get<double>() < 0) {
      return where + ": no non-negative ts";
    }
    const double ts = e["ts"];
    if (ph == "X") {
      if (!e.contains("dur") || !e["dur"].is_number() || e["dur"].get<double>() < 0) {
        return where + ": complete event without a non-negative dur";
      }
      continue;
    }
    if (!e.contains("id") || !e["id"].is_number_integer()) return where + ": flow without id";
    const int64_t id = e["id"];
    if (ph == "s") {
      if (!starts.emplace(id, ts).second) return where + ": flow id " + std::to_string(id) + " starts twice";
    } else {
      auto it = starts.find(id);
      if (it == starts.end()) return where + ": flow " + std::to_string(id) + " ends before it starts";
      if (ts < it->second) return where + ": flow " + std::to_string(id) + " ends before its start time";
      if (!finished.insert(id).second) return where + ": flow " + std::to_string(id) + " ends twice";
    }
  }
  if (finished.size() != starts.size()) return "a flow starts but never ends";
  return "";
}

}  // namespace tspipe
