#include "cli/result_table.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>

#include "io/file_util.h"

namespace tspipe {
namespace {

bool IsNumber(const std::string& s) {
  if (s.empty()) return false;
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size();
}

}  // namespace

ResultTable::ResultTable(std::vector<Column> columns) : columns_(std::move(columns)) {}

void ResultTable::AddRow(std::vector<std::string> cells) {
  if (cells.size() != columns_.size()) {
    throw std::invalid_argument("a results row of " + std::to_string(cells.size()) +
                                " cells for " + std::to_string(columns_.size()) + " columns");
  }
  rows_.push_back(std::move(cells));
}

std::string ResultTable::Console() const {
  std::vector<size_t> width(columns_.size());
  for (size_t c = 0; c < columns_.size(); ++c) {
    width[c] = columns_[c].name.size();
    for (const auto& row : rows_) width[c] = std::max(width[c], row[c].size());
  }
  std::ostringstream out;
  auto line = [&](const std::vector<std::string>& cells, bool header) {
    for (size_t c = 0; c < cells.size(); ++c) {
      const std::string pad(width[c] - cells[c].size(), ' ');
      const bool right = !header && c > 0 && IsNumber(cells[c]);
      out << (c ? " " : "") << (right ? pad + cells[c] : cells[c] + (c + 1 < cells.size() ? pad : ""));
    }
    out << "\n";
  };
  std::vector<std::string> names;
  for (const Column& c : columns_) names.push_back(c.name);
  line(names, true);
  for (const auto& row : rows_) line(row, false);
  return out.str();
}

std::string ResultTable::Markdown() const {
  std::ostringstream out;
  out << "|";
  for (const Column& c : columns_) out << " " << c.heading << " |";
  out << "\n|";
  for (size_t c = 0; c < columns_.size(); ++c) out << "---|";
  out << "\n";
  for (const auto& row : rows_) {
    out << "|";
    for (const std::string& cell : row) out << " " << cell << " |";
    out << "\n";
  }
  return out.str();
}

void ResultTable::Emit(const std::string& report_path, const std::string& extra) const {
  std::printf("\n%s", Console().c_str());
  std::fflush(stdout);
  if (!report_path.empty()) WriteFileAtomically(report_path, Markdown() + extra);
}

std::string Fixed(double value, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, value);
  return buf;
}

}  // namespace tspipe
