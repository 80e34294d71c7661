#include "cli/report.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace tspipe {

void ComparisonReporter::ReportRuns(const std::vector<Run>& runs) {
  ConsoleReporter::ReportRuns(runs);
  for (const Run& run : runs) {
    if (run.error_occurred) continue;
    // With repetitions, the median of a scheduler's repetitions stands for
    // it (and later single runs do not overwrite it).
    const bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
    if (run.run_type == Run::RT_Aggregate && !median) continue;
    std::string name = run.benchmark_name();
    std::string scheduler = name.substr(name.find('/') + 1);
    scheduler = scheduler.substr(0, scheduler.find('/'));
    if (!median && has_median_.count(scheduler)) continue;
    if (median) has_median_.insert(scheduler);
    Measured m;
    m.samples_per_second = run.counters.at("samples_per_second");
    m.devices = static_cast<int>(run.counters.at("devices"));
    m.bubble = run.counters.at("sim_bubble");
    auto stash = run.counters.find("stash_peak");
    if (stash != run.counters.end()) m.stash_peak = static_cast<int>(stash->second);
    auto tokens = run.counters.find("tokens_per_second");
    if (tokens != run.counters.end()) m.tokens_per_second = tokens->second;
    auto bytes = run.counters.find("bytes_per_step_per_device");
    if (bytes != run.counters.end()) m.bytes_per_step_per_device = bytes->second;
    auto counter = [&](const char* name, double* out) {
      auto it = run.counters.find(name);
      if (it != run.counters.end()) *out = it->second;
    };
    counter("meas_bubble", &m.measured_bubble);
    counter("peak_MiB", &m.peak_mib);
    counter("sim_stash_MiB", &m.sim_stash_mib);
    counter("meas_period_ms", &m.measured_period_ms);
    counter("pred_period_ms", &m.predicted_period_ms);
    counter("data_wait", &m.data_wait);
    (*results_)[scheduler] = m;
  }
}

std::string BarChartSvg(const Results& results, const std::vector<std::string>& names,
                        const std::string& title) {
  double top = 0;
  for (const auto& [n, m] : results) top = std::max(top, m.samples_per_second);
  std::ostringstream out;
  const int bar = 50, gap = 30, height = 300, left = 60;
  int width = left + static_cast<int>(names.size()) * (bar + gap) + 40;
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\""
      << height + 80 << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<text x=\"10\" y=\"20\" font-size=\"14\">" << title << "</text>\n";
  int x = left;
  for (const std::string& n : names) {
    auto it = results.find(n);
    if (it == results.end()) continue;
    double h = top > 0 ? it->second.samples_per_second / top * (height - 40) : 0;
    out << "<rect x=\"" << x << "\" y=\"" << height - h + 30 << "\" width=\"" << bar
        << "\" height=\"" << h << "\" fill=\"#4e79a7\"/>\n"
        << "<text x=\"" << x << "\" y=\"" << height - h + 25 << "\">"
        << static_cast<int>(it->second.samples_per_second) << "</text>\n"
        << "<text x=\"" << x << "\" y=\"" << height + 50 << "\">" << n << "</text>\n";
    x += bar + gap;
  }
  out << "</svg>\n";
  return out.str();
}

void PrintComparison(const Results& results, const std::vector<std::string>& names,
                     const std::string& baseline) {
  auto seq = results.find(baseline);
  bool tokens = false;
  for (const auto& [n, m] : results) tokens |= m.tokens_per_second > 0;
  int width = 12;  // Rows such as "tspipe:untraced" widen the first column.
  for (const std::string& n : names) width = std::max(width, static_cast<int>(n.size()));
  std::printf("\n%-*s %7s %12s", width, "scheduler", "devices", "samples/s");
  if (tokens) std::printf(" %12s", "tokens/s");
  std::printf(" %14s %18s %12s %12s %10s %10s %11s %13s %10s %16s\n", "vs_sequential",
              "fraction_of_ideal", "sim_bubble", "meas_bubble", "meas/pred", "data_wait",
              "stash_mb",
              "sim_stash_MiB", "peak_MiB", "KB_sent/step/dev");
  for (const std::string& n : names) {
    auto it = results.find(n);
    if (it == results.end()) continue;
    const Measured& m = it->second;
    // Large models on CPUs run below 10 samples/s: three decimals there.
    std::printf(m.samples_per_second < 10 ? "%-*s %7d %12.3f" : "%-*s %7d %12.1f", width,
                n.c_str(), m.devices, m.samples_per_second);
    if (tokens) std::printf(" %12.1f", m.tokens_per_second);
    if (seq != results.end()) {
      // Sequential runs on one device per model (one, unless the algorithm
      // trains several): the ideal scales it by the devices it lacks.
      double speedup = m.samples_per_second / seq->second.samples_per_second;
      std::printf(" %14.3f %18.3f", speedup, speedup * seq->second.devices / m.devices);
    } else {
      std::printf(" %14s %18s", "-", "-");
    }
    std::printf(" %12.4f", m.bubble);
    if (m.measured_bubble >= 0) {
      std::printf(" %12.4f", m.measured_bubble);
    } else {
      std::printf(" %12s", "-");
    }
    if (m.measured_period_ms > 0 && m.predicted_period_ms > 0) {
      std::printf(" %10.3f", m.measured_period_ms / m.predicted_period_ms);
    } else {
      std::printf(" %10s", "-");
    }
    std::printf(" %10.4f", m.data_wait);
    std::printf(" %11d", m.stash_peak);
    if (m.sim_stash_mib >= 0) {
      std::printf(" %13.1f", m.sim_stash_mib);
    } else {
      std::printf(" %13s", "-");
    }
    if (m.peak_mib >= 0) {
      std::printf(" %10.1f", m.peak_mib);
    } else {
      std::printf(" %10s", "-");
    }
    std::printf(" %16.1f\n", m.bytes_per_step_per_device / 1024);
  }
  if (seq == results.end()) {
    std::printf("(add 'sequential' to --scheduler for ratios against the ideal)\n");
  } else {
    std::printf("ideal = sequential samples/s x devices / sequential's devices; "
                "fraction_of_ideal = samples/s / ideal; stash_mb = most micro-batches a stage "
                "holds for a backward; sim_stash_MiB = the schedule's stash peaks at the bytes each "
                "forward was measured to keep, summed over stages; peak_MiB = the most memory the last timed iteration allocated and held "
                "(measured at the allocator: every rank of a CPU run together, the largest GPU "
                "otherwise); meas_bubble = idle share of each rank over the steady steps of "
                "the last timed iteration (recorded); meas/pred = its measured period / the "
                "simulator's from the measured per-action costs; data_wait = share of the timed "
                "iterations spent waiting for the data source (an image folder's decoder "
                "threads falling behind)\n");
  }
  std::fflush(stdout);
}

std::string TraceSvgPath(const std::string& trace) {
  const std::string ext = ".json";
  if (trace.size() > ext.size() && trace.compare(trace.size() - ext.size(), ext.size(), ext) == 0) {
    return trace.substr(0, trace.size() - ext.size()) + ".svg";
  }
  return trace + ".svg";
}

}  // namespace tspipe
