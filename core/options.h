// Named, typed, validated options of a module (an algorithm recipe), set from
// one "name=value,name=value" string. Torch-free and flag-free: a main reads
// its command line and hands the string over; the module declares what it
// accepts (names, defaults, help, valid values) and never sees a flag.
//
// List values may contain commas: an item without '=' continues the value
// before it, so "widths=16,32,64,temperature=2" sets widths to "16,32,64".
#ifndef TSPIPE_CORE_OPTIONS_H_
#define TSPIPE_CORE_OPTIONS_H_

#include <limits>
#include <map>
#include <string>
#include <vector>

namespace tspipe {

// One declared option. Build with the helpers below, e.g.
//   DoubleOption("temperature", 4.0, "softmax temperature T").Above(0)
struct OptionSpec {
  enum class Type { kInt, kDouble, kBool, kString, kIntList };
  std::string name;
  Type type = Type::kString;
  std::string default_value;  // In the text form a user would type.
  std::string help;
  // Numeric bounds (kInt, kDouble and every kIntList item).
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  bool min_exclusive = false;
  // kString: the accepted values; empty = any.
  std::vector<std::string> choices;
  // kIntList: accepted lengths; empty = any length >= 1.
  std::vector<int> lengths;

  OptionSpec& AtLeast(double v) { min = v; min_exclusive = false; return *this; }
  OptionSpec& Above(double v) { min = v; min_exclusive = true; return *this; }
  OptionSpec& AtMost(double v) { max = v; return *this; }
  OptionSpec& OneOf(std::vector<std::string> values) { choices = std::move(values); return *this; }
};

OptionSpec IntOption(const std::string& name, int default_value, const std::string& help);
OptionSpec DoubleOption(const std::string& name, double default_value, const std::string& help);
OptionSpec BoolOption(const std::string& name, bool default_value, const std::string& help);
OptionSpec StringOption(const std::string& name, const std::string& default_value,
                        const std::string& help);
OptionSpec IntListOption(const std::string& name, const std::vector<int>& default_value,
                         const std::string& help);

// Validated values of every declared option (defaults filled in).
class OptionValues {
 public:
  // Getters abort with std::logic_error for an undeclared name or a type
  // mismatch: that is a bug in the module, not bad input.
  int GetInt(const std::string& name) const;
  double GetDouble(const std::string& name) const;
  bool GetBool(const std::string& name) const;
  const std::string& GetString(const std::string& name) const;
  std::vector<int> GetInts(const std::string& name) const;
  // Whether the user set `name` (rather than taking the default).
  bool IsSet(const std::string& name) const;
  // Every option as "name=value" in declaration order, one per line: the
  // same values give the same text (c10d ranks compare it).
  std::string Canonical() const;

 private:
  friend OptionValues ParseOptions(const std::string&, const std::vector<OptionSpec>&,
                                   const std::string&);
  const std::string& Raw(const std::string& name, OptionSpec::Type type) const;
  std::vector<OptionSpec> specs_;
  std::map<std::string, std::string> values_;
  std::map<std::string, bool> set_;
};

// Parses `text` ("" = all defaults) against `specs`. Throws
// std::invalid_argument with a one-line message naming `owner`, the option
// and the value: an unknown name (listing the known ones), a repeated name,
// a value of the wrong type, out of bounds or not among the choices.
OptionValues ParseOptions(const std::string& owner, const std::vector<OptionSpec>& specs,
                          const std::string& text);

// "  name (type, default D): help [range]" lines, for --help texts.
std::string DescribeOptions(const std::vector<OptionSpec>& specs);

// "3,2" -> {3, 2}. Throws std::invalid_argument naming `what` and the item
// when one is not an integer; "" -> {}.
std::vector<int> ParseIntList(const std::string& text, const std::string& what);
std::string FormatIntList(const std::vector<int>& values);

}  // namespace tspipe

#endif  // TSPIPE_CORE_OPTIONS_H_
