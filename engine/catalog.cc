#include "engine/catalog.h"

#include <sstream>
#include <stdexcept>

#include "core/scheduler.h"
#include "engine/recipe.h"

namespace tspipe {

std::unique_ptr<Recipe> CreateRecipe(const std::string& name) {
  if (!RecipeRegistry::Global().Contains(name)) {
    std::string names;
    for (const std::string& n : RecipeRegistry::Global().Names()) {
      names += (names.empty() ? "" : ", ") + n;
    }
    throw std::invalid_argument("unknown algorithm '" + name + "'; choices: " + names);
  }
  return RecipeRegistry::Global().Create(name);
}

ConfiguredRecipe ConfigureRecipe(const std::string& name, const std::string& options) {
  ConfiguredRecipe c;
  c.recipe = CreateRecipe(name);
  OptionValues values = ParseOptions(name, c.recipe->Options(), options);
  c.recipe->Configure(values);
  c.options = values.Canonical();
  return c;
}

std::vector<std::string> SchedulerNames() { return SchedulerRegistry::Global().Names(); }
std::string DescribeSchedulers() { return SchedulerRegistry::Global().Describe(); }
std::vector<std::string> RecipeNames() { return RecipeRegistry::Global().Names(); }
std::string DescribeRecipes() { return RecipeRegistry::Global().Describe(); }

std::string RecipeOptionsHelp(const std::string& algorithm) {
  return "Options of " + algorithm + " (--algorithm_options=name=value,...):\n" +
         DescribeOptions(CreateRecipe(algorithm)->Options());
}

std::string CheckRecipeOptions(const std::string& algorithm, const std::string& options) {
  return ConfigureRecipe(algorithm, options).options;
}

std::vector<std::string> RecipeDataSets(const std::string& algorithm) {
  return CreateRecipe(algorithm)->DataSets();
}

std::string RecipeOptionValue(const std::string& algorithm, const std::string& options,
                              const std::string& name) {
  const std::string canonical = CheckRecipeOptions(algorithm, options);
  std::istringstream in(canonical);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name + "=", 0) == 0) return line.substr(name.size() + 1);
  }
  throw std::invalid_argument(algorithm + " has no option '" + name + "'");
}

}  // namespace tspipe
