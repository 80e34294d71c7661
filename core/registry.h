// Name -> factory registries for schedulers, algorithms and backends, so that
// `--scheduler=...` can list its choices in --help.
//
// Registration happens in static initialisers of the implementing .cc files;
// their Bazel libraries are `alwayslink = 1`, so the linker cannot drop a
// registration that nothing references by name.
#ifndef TSPIPE_CORE_REGISTRY_H_
#define TSPIPE_CORE_REGISTRY_H_

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace tspipe {

template <typename T>
class Registry {
 public:
  using Factory = std::function<std::unique_ptr<T>()>;

  static Registry& Global() {
    static Registry* registry = new Registry();  // Never destroyed.
    return *registry;
  }

  // Returns true so it can initialise a static; a duplicate name is a
  // programming error and aborts loudly.
  bool Register(const std::string& name, const std::string& help, Factory factory) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!entries_.emplace(name, Entry{help, std::move(factory)}).second) {
      throw std::logic_error("duplicate registration of '" + name + "'");
    }
    return true;
  }

  // Throws std::invalid_argument listing the valid names when `name` is
  // unknown.
  std::unique_ptr<T> Create(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      std::string names;
      for (const auto& [n, e] : entries_) names += (names.empty() ? "" : ", ") + n;
      throw std::invalid_argument("unknown name '" + name + "'; choices: " + names);
    }
    return it->second.factory();
  }

  bool Contains(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mu_);
    return entries_.count(name) > 0;
  }

  std::vector<std::string> Names() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> names;
    for (const auto& [n, e] : entries_) names.push_back(n);
    return names;
  }

  // "name: help" lines, for --help texts.
  std::string Describe() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out;
    for (const auto& [n, e] : entries_) out += "  " + n + ": " + e.help + "\n";
    return out;
  }

 private:
  struct Entry {
    std::string help;
    Factory factory;
  };
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;
};

}  // namespace tspipe

#endif  // TSPIPE_CORE_REGISTRY_H_
