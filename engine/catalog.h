// What is registered, by name: schedulers and recipes, their help and
// options, for mains' --help and for checking flags before any work starts.
// Torch-free.
#ifndef TSPIPE_ENGINE_CATALOG_H_
#define TSPIPE_ENGINE_CATALOG_H_

#include <string>
#include <vector>

namespace tspipe {

// Registered schedulers and recipes, for --help and "all".
std::vector<std::string> SchedulerNames();
std::string DescribeSchedulers();
std::vector<std::string> RecipeNames();
std::string DescribeRecipes();
// "Options of kd (--algorithm_options=name=value,...):" and one line per
// option. Throws std::invalid_argument for an unknown recipe.
std::string RecipeOptionsHelp(const std::string& algorithm);
// Parses `options` for `algorithm` and returns its canonical form
// ("name=value" lines); throws std::invalid_argument with a one-line
// message for an unknown recipe, option or bad value. Mains call it before
// any work starts.
std::string CheckRecipeOptions(const std::string& algorithm, const std::string& options);
// The data sets `algorithm` trains on besides "synthetic"
// (Recipe::DataSets), for mains to check --data before any work.
std::vector<std::string> RecipeDataSets(const std::string& algorithm);
// The value `options` give option `name` of `algorithm` (its default when
// unset), as text: mains that chain runs of two recipes (kd_accuracy's
// teacher) carry values across.
std::string RecipeOptionValue(const std::string& algorithm, const std::string& options,
                              const std::string& name);

}  // namespace tspipe

#endif  // TSPIPE_ENGINE_CATALOG_H_
