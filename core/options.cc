#include "core/options.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <stdexcept>

namespace tspipe {
namespace {

using Type = OptionSpec::Type;

std::string TypeName(Type t) {
  switch (t) {
    case Type::kInt: return "integer";
    case Type::kDouble: return "number";
    case Type::kBool: return "true/false";
    case Type::kString: return "string";
    case Type::kIntList: return "integer list";
  }
  return "?";
}

// The shortest text that reads back as `v` (0.1 stays "0.1").
std::string FormatNumber(double v) {
  for (int precision = 6; precision < 17; ++precision) {
    std::ostringstream out;
    out.precision(precision);
    out << v;
    if (std::strtod(out.str().c_str(), nullptr) == v) return out.str();
  }
  std::ostringstream out;
  out.precision(17);
  out << v;
  return out.str();
}

bool ParseLong(const std::string& text, long long* out) {
  if (text.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || end != text.c_str() + text.size()) return false;
  *out = v;
  return true;
}

bool ParseDouble(const std::string& text, double* out) {
  if (text.empty()) return false;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

bool ParseBool(const std::string& text, bool* out) {
  if (text == "true" || text == "1" || text == "yes") {
    *out = true;
    return true;
  }
  if (text == "false" || text == "0" || text == "no") {
    *out = false;
    return true;
  }
  return false;
}

std::string RangeText(const OptionSpec& s) {
  const bool lo = std::isfinite(s.min), hi = std::isfinite(s.max);
  if (!lo && !hi) return "";
  std::string out;
  if (lo) out += (s.min_exclusive ? "> " : ">= ") + FormatNumber(s.min);
  if (lo && hi) out += " and ";
  if (hi) out += "<= " + FormatNumber(s.max);
  return out;
}

// Throws naming owner, option and value unless `value` is valid for `s`.
void Check(const std::string& owner, const OptionSpec& s, const std::string& value) {
  const std::string where = owner + " option " + s.name + "=" + value + ": ";
  auto in_range = [&](double v) {
    if ((s.min_exclusive ? v <= s.min : v < s.min) || v > s.max) {
      throw std::invalid_argument(where + "must be " + RangeText(s));
    }
  };
  switch (s.type) {
    case Type::kInt: {
      long long v = 0;
      if (!ParseLong(value, &v) || v < -2147483648LL || v > 2147483647LL) {
        throw std::invalid_argument(where + "not an integer");
      }
      in_range(static_cast<double>(v));
      return;
    }
    case Type::kDouble: {
      double v = 0;
      if (!ParseDouble(value, &v)) throw std::invalid_argument(where + "not a finite number");
      in_range(v);
      return;
    }
    case Type::kBool: {
      bool v = false;
      if (!ParseBool(value, &v)) throw std::invalid_argument(where + "not true or false");
      return;
    }
    case Type::kString: {
      if (s.choices.empty()) return;
      for (const std::string& c : s.choices) {
        if (c == value) return;
      }
      std::string list;
      for (const std::string& c : s.choices) list += (list.empty() ? "" : ", ") + c;
      throw std::invalid_argument(where + "not one of " + list);
    }
    case Type::kIntList: {
      std::vector<int> items;
      try {
        items = ParseIntList(value, owner + " option " + s.name);
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(where + "not a comma-separated list of integers");
      }
      if (items.empty()) throw std::invalid_argument(where + "needs at least one integer");
      if (!s.lengths.empty()) {
        bool ok = false;
        for (int n : s.lengths) ok |= static_cast<int>(items.size()) == n;
        if (!ok) {
          std::string lens;
          for (int n : s.lengths) lens += (lens.empty() ? "" : " or ") + std::to_string(n);
          throw std::invalid_argument(where + "needs " + lens + " entries");
        }
      }
      for (int v : items) in_range(v);
      return;
    }
  }
}

// One text per value, so that equal settings compare equal as text.
std::string Normalised(const OptionSpec& s, const std::string& value) {
  switch (s.type) {
    case Type::kInt: {
      long long v = 0;
      ParseLong(value, &v);
      return std::to_string(v);
    }
    case Type::kDouble: {
      double v = 0;
      ParseDouble(value, &v);
      return FormatNumber(v);
    }
    case Type::kBool: {
      bool v = false;
      ParseBool(value, &v);
      return v ? "true" : "false";
    }
    case Type::kIntList:
      return FormatIntList(ParseIntList(value, s.name));
    case Type::kString:
      return value;
  }
  return value;
}

}  // namespace

OptionSpec IntOption(const std::string& name, int default_value, const std::string& help) {
  OptionSpec s;
  s.name = name;
  s.type = Type::kInt;
  s.default_value = std::to_string(default_value);
  s.help = help;
  return s;
}

OptionSpec DoubleOption(const std::string& name, double default_value, const std::string& help) {
  OptionSpec s;
  s.name = name;
  s.type = Type::kDouble;
  s.default_value = FormatNumber(default_value);
  s.help = help;
  return s;
}

OptionSpec BoolOption(const std::string& name, bool default_value, const std::string& help) {
  OptionSpec s;
  s.name = name;
  s.type = Type::kBool;
  s.default_value = default_value ? "true" : "false";
  s.help = help;
  return s;
}

OptionSpec StringOption(const std::string& name, const std::string& default_value,
                        const std::string& help) {
  OptionSpec s;
  s.name = name;
  s.type = Type::kString;
  s.default_value = default_value;
  s.help = help;
  return s;
}

OptionSpec IntListOption(const std::string& name, const std::vector<int>& default_value,
                         const std::string& help) {
  OptionSpec s;
  s.name = name;
  s.type = Type::kIntList;
  s.default_value = FormatIntList(default_value);
  s.help = help;
  return s;
}

const std::string& OptionValues::Raw(const std::string& name, Type type) const {
  for (const OptionSpec& s : specs_) {
    if (s.name != name) continue;
    if (s.type != type) {
      throw std::logic_error("option " + name + " is a " + TypeName(s.type) + ", read as a " +
                             TypeName(type));
    }
    return values_.at(name);
  }
  throw std::logic_error("option " + name + " was never declared");
}

int OptionValues::GetInt(const std::string& name) const {
  return std::stoi(Raw(name, Type::kInt));
}

double OptionValues::GetDouble(const std::string& name) const {
  double v = 0;
  ParseDouble(Raw(name, Type::kDouble), &v);
  return v;
}

bool OptionValues::GetBool(const std::string& name) const {
  bool v = false;
  ParseBool(Raw(name, Type::kBool), &v);
  return v;
}

const std::string& OptionValues::GetString(const std::string& name) const {
  return Raw(name, Type::kString);
}

std::vector<int> OptionValues::GetInts(const std::string& name) const {
  return ParseIntList(Raw(name, Type::kIntList), name);
}

bool OptionValues::IsSet(const std::string& name) const {
  auto it = set_.find(name);
  return it != set_.end() && it->second;
}

std::string OptionValues::Canonical() const {
  std::string out;
  for (const OptionSpec& s : specs_) out += s.name + "=" + values_.at(s.name) + "\n";
  return out;
}

OptionValues ParseOptions(const std::string& owner, const std::vector<OptionSpec>& specs,
                          const std::string& text) {
  OptionValues v;
  v.specs_ = specs;
  for (const OptionSpec& s : specs) {
    v.values_[s.name] = s.default_value;
    v.set_[s.name] = false;
  }
  // Split on commas; an item without '=' continues the previous value.
  std::vector<std::pair<std::string, std::string>> items;
  if (!text.empty() && text.back() == ',') {
    throw std::invalid_argument(owner + " options: '" + text + "' ends with a comma");
  }
  if (text.find('\n') != std::string::npos) {
    throw std::invalid_argument(owner + " options may not contain a line break");
  }
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) {
      throw std::invalid_argument(owner + " options: '" + text + "' has an empty item");
    }
    const size_t eq = item.find('=');
    if (eq == std::string::npos) {
      if (items.empty()) {
        throw std::invalid_argument(owner + " options: '" + item + "' is not name=value");
      }
      items.back().second += "," + item;
      continue;
    }
    items.emplace_back(item.substr(0, eq), item.substr(eq + 1));
  }
  for (const auto& [name, value] : items) {
    const OptionSpec* spec = nullptr;
    for (const OptionSpec& s : specs) {
      if (s.name == name) spec = &s;
    }
    if (spec == nullptr) {
      std::string known;
      for (const OptionSpec& s : specs) known += (known.empty() ? "" : ", ") + s.name;
      throw std::invalid_argument(owner + " has no option '" + name + "'; its options: " +
                                  (known.empty() ? "none" : known));
    }
    if (v.set_[name]) {
      throw std::invalid_argument(owner + " option " + name + " is given twice");
    }
    Check(owner, *spec, value);
    v.values_[name] = Normalised(*spec, value);
    v.set_[name] = true;
  }
  return v;
}

std::string DescribeOptions(const std::vector<OptionSpec>& specs) {
  std::string out;
  for (const OptionSpec& s : specs) {
    out += "  " + s.name + " (" + TypeName(s.type) + ", default " +
           (s.default_value.empty() ? "''" : s.default_value) + "): " + s.help;
    std::string range = RangeText(s);
    if (!s.choices.empty()) {
      range.clear();
      for (const std::string& c : s.choices) range += (range.empty() ? "one of " : ", ") + c;
    }
    if (!range.empty()) out += " [" + range + "]";
    out += "\n";
  }
  return out;
}

std::vector<int> ParseIntList(const std::string& text, const std::string& what) {
  std::vector<int> out;
  if (text.empty()) return out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    long long v = 0;
    if (!ParseLong(item, &v) || v < -2147483648LL || v > 2147483647LL) {
      throw std::invalid_argument(what + ": '" + item + "' is not an integer");
    }
    out.push_back(static_cast<int>(v));
  }
  if (text.back() == ',') throw std::invalid_argument(what + ": '" + text + "' ends with a comma");
  return out;
}

std::string FormatIntList(const std::vector<int>& values) {
  std::string out;
  for (size_t i = 0; i < values.size(); ++i) out += (i ? "," : "") + std::to_string(values[i]);
  return out;
}

}  // namespace tspipe
