// The results table of an accuracy run: printed aligned on stdout (one row
// per run, columns separated by spaces, so scripts can grep and awk it) and
// written as a Markdown table to the report file. One copy for every
// accuracy main. Torch-free.
#ifndef TSPIPE_CLI_RESULT_TABLE_H_
#define TSPIPE_CLI_RESULT_TABLE_H_

#include <string>
#include <vector>

namespace tspipe {

class ResultTable {
 public:
  struct Column {
    std::string name;     // On the console: one word, e.g. "test_accuracy".
    std::string heading;  // In the Markdown report, e.g. "test accuracy".
  };
  explicit ResultTable(std::vector<Column> columns);

  // Cells as text (Fixed() for numbers). Throws std::invalid_argument when
  // the count differs from the columns'.
  void AddRow(std::vector<std::string> cells);

  // Every column as wide as its widest cell; text left-aligned, cells that
  // read as numbers right-aligned.
  std::string Console() const;
  std::string Markdown() const;
  // Prints Console() (after a blank line) and, when `report_path` is not
  // empty, writes Markdown() and `extra` to it atomically.
  void Emit(const std::string& report_path, const std::string& extra = "") const;

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};

// `value` with `decimals` digits after the point.
std::string Fixed(double value, int decimals);

}  // namespace tspipe

#endif  // TSPIPE_CLI_RESULT_TABLE_H_
