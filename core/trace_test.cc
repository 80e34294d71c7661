// The trace's figures against a timeline worked out by hand, and its
// Chrome trace JSON against what the format requires.
#include "core/trace.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace tspipe {
namespace {

Action A(const std::string& text) {
  Action a;
  std::string error;
  EXPECT_TRUE(ParseAction(text, &a, &error)) << error;
  return a;
}

// Two stages, one micro-batch: rank 0 runs 0F0, sends, waits for the
// gradient, 0B0, 0O; rank 1 receives, 1F0, 1L, 1B0, sends back, 1O.
Schedule TwoStages() {
  Schedule s;
  s.scheduler = "hand";
  s.num_stages = 2;
  s.num_microbatches = 1;
  s.placement = {{0}, {1}};
  s.ranks = {{A("0F0"), A("0SA0>1"), A("0RG0<1"), A("0B0"), A("0O")},
             {A("1RA0<0"), A("1F0"), A("1L"), A("1B0"), A("1SG0>0"), A("1O")}};
  return s;
}

// Every step takes 100 us; within it (times from the step's start):
//   rank 0: 0F0 [0,10] 0SA0 [10,11] 0RG0 [11,46] 0B0 [46,66] 0O [66,67]
//   rank 1: 1RA0 [5,12] 1F0 [12,22] 1L [22,27] 1B0 [27,44] 1SG0 [44,45] 1O [45,46]
TraceRun HandTrace(int steps) {
  const std::vector<std::vector<std::pair<double, double>>> times = {
      {{0, 10}, {10, 11}, {11, 46}, {46, 66}, {66, 67}},
      {{5, 12}, {12, 22}, {22, 27}, {27, 44}, {44, 45}, {45, 46}}};
  TraceRun run;
  run.name = "hand";
  run.schedule = TwoStages();
  for (int step = 0; step < steps; ++step) {
    for (int rank = 0; rank < 2; ++rank) {
      for (size_t i = 0; i < times[rank].size(); ++i) {
        TraceEvent e;
        e.rank = rank;
        e.index = static_cast<int>(i);
        e.action = run.schedule.ranks[rank][i];
        e.step = step;
        e.start_us = 1000 + 100.0 * step + times[rank][i].first;
        e.end_us = 1000 + 100.0 * step + times[rank][i].second;
        run.events.push_back(e);
      }
    }
  }
  return run;
}

TEST(TraceTest, SummaryMatchesTheHandWorkedTimeline) {
  const TraceSummary s = SummarizeTrace(HandTrace(4));
  // Steps 1 and 2 are steady (0 fills, 3 drains); each rank's window is
  // 200 us. Busy per step: rank 0 F+B+O = 31, rank 1 F+L+B+O = 33.
  EXPECT_EQ(s.steady_steps, 2);
  EXPECT_DOUBLE_EQ(s.period_us, 100);
  EXPECT_NEAR(s.bubble, 1 - (2 * 31.0 + 2 * 33.0) / 400, 1e-12);
  EXPECT_DOUBLE_EQ(s.costs.forward_per_stage[0], 10);
  EXPECT_DOUBLE_EQ(s.costs.backward_per_stage[0], 20);
  EXPECT_DOUBLE_EQ(s.costs.backward_per_stage[1], 17);
  EXPECT_DOUBLE_EQ(s.costs.loss, 5);
  EXPECT_DOUBLE_EQ(s.costs.optimizer_step, 1);
  // With messages free, rank 0 cycles through F (10), rank 1's F + L + B
  // (10 + 5 + 17), its own B (20) and O (1): 63 us, both ranks busy 64 of
  // 126.
  EXPECT_NEAR(s.predicted_period_us, 63, 1e-9);
  EXPECT_NEAR(s.predicted_bubble, 1 - 64.0 / 126, 1e-9);
  // Not metered: no bytes.
  EXPECT_TRUE(s.predicted_stash_bytes.empty());
}

// Metered forwards: the median bytes each stage's forward kept, times the
// one micro-batch each stage stashes (PeakStashes of this schedule).
TEST(TraceTest, StashBytesFromMeteredForwards) {
  TraceRun run = HandTrace(5);
  for (TraceEvent& e : run.events) {
    if (e.action.op != Op::kForward) continue;
    // Stage 0: 1000, 3000, 1000, 2000, 9000 bytes in steps 0..4; steady
    // steps 1..3 give the median 2000. Stage 1 always 500.
    const int64_t stage0[] = {1000, 3000, 1000, 2000, 9000};
    e.held_bytes = e.action.stage == 0 ? stage0[e.step] : 500;
  }
  const TraceSummary s = SummarizeTrace(run);
  ASSERT_EQ(s.forward_bytes.size(), 2u);
  EXPECT_DOUBLE_EQ(s.forward_bytes[0], 2000);
  EXPECT_DOUBLE_EQ(s.forward_bytes[1], 500);
  ASSERT_EQ(s.predicted_stash_bytes.size(), 2u);
  EXPECT_DOUBLE_EQ(s.predicted_stash_bytes[0], 2000);
  EXPECT_DOUBLE_EQ(s.predicted_stash_bytes[1], 500);
  int with_bytes = 0;
  const nlohmann::json doc = nlohmann::json::parse(ChromeTraceJson({run}));
  for (const auto& e : doc["traceEvents"]) {
    if (e.contains("args") && e["args"].contains("held_bytes")) {
      ++with_bytes;
      if (e["name"] == "1F0") EXPECT_EQ(e["args"]["held_bytes"], 500);
    }
  }
  EXPECT_EQ(with_bytes, 10);  // The forwards of 5 steps on 2 ranks.
}

TEST(TraceTest, SummaryNeedsASteadyStep) {
  EXPECT_THROW(SummarizeTrace(HandTrace(2)), std::invalid_argument);
}

TEST(TraceTest, ChromeJsonHasTracksSlicesAndOneFlowPerMessage) {
  const std::string text = ChromeTraceJson({HandTrace(3)});
  EXPECT_EQ(CheckChromeTrace(text), "");
  const nlohmann::json doc = nlohmann::json::parse(text);
  int slices = 0, starts = 0, ends = 0, threads = 0;
  double first = 1e18;
  for (const auto& e : doc["traceEvents"]) {
    const std::string ph = e["ph"];
    if (ph == "X") {
      ++slices;
      first = std::min(first, e["ts"].get<double>());
      if (e["name"] == "1F0") EXPECT_EQ(e["tid"], 1);
    }
    if (ph == "s") ++starts;
    if (ph == "f") ++ends;
    if (ph == "M" && e["name"] == "thread_name") ++threads;
  }
  EXPECT_EQ(slices, 3 * 11);
  EXPECT_EQ(starts, 3 * 2);  // SA and SG each step.
  EXPECT_EQ(ends, starts);
  EXPECT_EQ(threads, 2);
  EXPECT_EQ(first, 0);  // Relative to the earliest event.
}

TEST(TraceTest, CheckRefusesBrokenTraces) {
  nlohmann::json doc = nlohmann::json::parse(ChromeTraceJson({HandTrace(3)}));
  EXPECT_NE(CheckChromeTrace("{\"traceEvents\": ["), "");
  nlohmann::json no_dur = doc;
  for (auto& e : no_dur["traceEvents"]) {
    if (e["ph"] == "X") {
      e.erase("dur");
      break;
    }
  }
  EXPECT_NE(CheckChromeTrace(no_dur.dump()), "");
  nlohmann::json lost_end = doc;
  auto& events = lost_end["traceEvents"];
  for (size_t i = 0; i < events.size(); ++i) {
    if (events[i]["ph"] == "f") {
      events.erase(events.begin() + static_cast<long>(i));
      break;
    }
  }
  EXPECT_NE(CheckChromeTrace(lost_end.dump()), "");
}

TEST(TraceTest, SvgShowsMeasuredAboveSimulated) {
  const std::string svg = MeasuredTimelineSvg({HandTrace(4)});
  const size_t measured = svg.find("hand, measured");
  const size_t simulated = svg.find("hand, simulated from the measured costs");
  ASSERT_NE(measured, std::string::npos);
  ASSERT_NE(simulated, std::string::npos);
  EXPECT_LT(measured, simulated);
  // 7 compute actions per step, 4 steps, in each picture.
  size_t boxes = 0;
  for (size_t at = svg.find("<title>"); at != std::string::npos; at = svg.find("<title>", at + 1)) {
    ++boxes;
  }
  EXPECT_EQ(boxes, 2u * 4 * 7);
}

}  // namespace
}  // namespace tspipe
