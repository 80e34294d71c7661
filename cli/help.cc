#include "cli/help.h"

#include <gflags/gflags.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <sstream>

namespace tspipe {
namespace {

bool Matches(const std::string& file, const std::string& pattern) {
  if (!pattern.empty() && pattern.back() == '/') return file.rfind(pattern, 0) == 0;
  return file == pattern;
}

}  // namespace

std::string OwnFlagsHelp(const std::vector<std::string>& files) {
  std::vector<gflags::CommandLineFlagInfo> all;
  gflags::GetAllFlags(&all);
  std::ostringstream out;
  for (const std::string& pattern : files) {
    std::vector<gflags::CommandLineFlagInfo> mine;
    for (const gflags::CommandLineFlagInfo& f : all) {
      if (Matches(f.filename, pattern)) mine.push_back(f);
    }
    if (mine.empty()) continue;
    std::sort(mine.begin(), mine.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
    out << "\n  Flags from " << pattern << ":\n";
    for (const gflags::CommandLineFlagInfo& f : mine) {
      const std::string quote = f.type == "string" ? "\"" : "";
      out << "    --" << f.name << " (" << f.description << ") type: " << f.type
          << " default: " << quote << f.default_value << quote << "\n";
    }
  }
  out << "\nLogging and flag-parsing flags (glog, gflags): --helpfull.\n";
  return out.str();
}

void HandleHelpFlags(int argc, char** argv, const std::vector<std::string>& files) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-help" || a == "--helpshort" || a == "-helpshort") {
      std::cout << gflags::ProgramUsage() << "\n" << OwnFlagsHelp(files);
      std::exit(0);
    }
  }
}

}  // namespace tspipe
