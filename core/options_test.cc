#include "core/options.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

namespace tspipe {
namespace {

std::vector<OptionSpec> Specs() {
  return {DoubleOption("temperature", 4.0, "T").Above(0),
          DoubleOption("lambda", 0.1, "weight").AtLeast(0).AtMost(1),
          IntOption("hidden", 256, "width").AtLeast(1),
          BoolOption("t_squared", true, "scale"),
          StringOption("loss", "kl", "divergence").OneOf({"kl", "mse"}),
          IntListOption("widths", {16, 32, 64}, "channels").AtLeast(1)};
}

std::string ErrorOf(const std::string& text) {
  try {
    ParseOptions("kd", Specs(), text);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(OptionsTest, DefaultsWhenEmpty) {
  OptionValues v = ParseOptions("kd", Specs(), "");
  EXPECT_DOUBLE_EQ(v.GetDouble("temperature"), 4.0);
  EXPECT_DOUBLE_EQ(v.GetDouble("lambda"), 0.1);
  EXPECT_EQ(v.GetInt("hidden"), 256);
  EXPECT_TRUE(v.GetBool("t_squared"));
  EXPECT_EQ(v.GetString("loss"), "kl");
  EXPECT_EQ(v.GetInts("widths"), (std::vector<int>{16, 32, 64}));
  EXPECT_FALSE(v.IsSet("hidden"));
}

TEST(OptionsTest, ListValuesKeepTheirCommas) {
  OptionValues v = ParseOptions("kd", Specs(), "widths=8,16,temperature=2,t_squared=false");
  EXPECT_EQ(v.GetInts("widths"), (std::vector<int>{8, 16}));
  EXPECT_DOUBLE_EQ(v.GetDouble("temperature"), 2.0);
  EXPECT_FALSE(v.GetBool("t_squared"));
  EXPECT_TRUE(v.IsSet("widths"));
  EXPECT_FALSE(v.IsSet("lambda"));
}

TEST(OptionsTest, CanonicalFormIsInDeclarationOrderAndIndependentOfInputOrder) {
  const std::string a = ParseOptions("kd", Specs(), "hidden=8,lambda=0.5").Canonical();
  const std::string b = ParseOptions("kd", Specs(), "lambda=0.50,hidden=08").Canonical();
  EXPECT_EQ(a, b);
  EXPECT_EQ(a,
            "temperature=4\nlambda=0.5\nhidden=8\nt_squared=true\nloss=kl\nwidths=16,32,64\n");
}

TEST(OptionsTest, BadInputGetsOneLineNamingOptionAndValue) {
  EXPECT_EQ(ErrorOf("temprature=2"),
            "kd has no option 'temprature'; its options: temperature, lambda, hidden, "
            "t_squared, loss, widths");
  EXPECT_EQ(ErrorOf("temperature=0"), "kd option temperature=0: must be > 0");
  EXPECT_EQ(ErrorOf("temperature=abc"), "kd option temperature=abc: not a finite number");
  EXPECT_EQ(ErrorOf("temperature=nan"), "kd option temperature=nan: not a finite number");
  EXPECT_EQ(ErrorOf("lambda=1.5"), "kd option lambda=1.5: must be >= 0 and <= 1");
  EXPECT_EQ(ErrorOf("hidden=2.5"), "kd option hidden=2.5: not an integer");
  EXPECT_EQ(ErrorOf("hidden=0"), "kd option hidden=0: must be >= 1");
  EXPECT_EQ(ErrorOf("hidden=99999999999"), "kd option hidden=99999999999: not an integer");
  EXPECT_EQ(ErrorOf("t_squared=maybe"), "kd option t_squared=maybe: not true or false");
  EXPECT_EQ(ErrorOf("loss=l1"), "kd option loss=l1: not one of kl, mse");
  EXPECT_EQ(ErrorOf("widths=8,x"), "kd option widths=8,x: not a comma-separated list of integers");
  EXPECT_EQ(ErrorOf("widths=8,0"), "kd option widths=8,0: must be >= 1");
  EXPECT_EQ(ErrorOf("widths="), "kd option widths=: needs at least one integer");
  EXPECT_EQ(ErrorOf("hidden=1,hidden=2"), "kd option hidden is given twice");
  EXPECT_EQ(ErrorOf("oops"), "kd options: 'oops' is not name=value");
  EXPECT_EQ(ErrorOf("temperature=2,"), "kd options: 'temperature=2,' ends with a comma");
  EXPECT_EQ(ErrorOf("temperature=2,,lambda=1"),
            "kd options: 'temperature=2,,lambda=1' has an empty item");
  for (const char* text : {"temprature=2", "hidden=0", "widths=8,x"}) {
    EXPECT_EQ(ErrorOf(text).find('\n'), std::string::npos) << text;
  }
}

TEST(OptionsTest, ReadingAnUndeclaredOrMistypedOptionIsABug) {
  OptionValues v = ParseOptions("kd", Specs(), "");
  EXPECT_THROW(v.GetInt("nope"), std::logic_error);
  EXPECT_THROW(v.GetInt("temperature"), std::logic_error);
}

TEST(OptionsTest, DescribeListsEveryOptionWithDefaultAndRange) {
  const std::string d = DescribeOptions(Specs());
  EXPECT_NE(d.find("  temperature (number, default 4): T [> 0]\n"), std::string::npos) << d;
  EXPECT_NE(d.find("  loss (string, default kl): divergence [one of kl, mse]\n"),
            std::string::npos)
      << d;
  EXPECT_NE(d.find("  widths (integer list, default 16,32,64): channels [>= 1]\n"),
            std::string::npos)
      << d;
}

TEST(OptionsTest, IntLists) {
  EXPECT_EQ(ParseIntList("3,2", "x"), (std::vector<int>{3, 2}));
  EXPECT_TRUE(ParseIntList("", "x").empty());
  EXPECT_THROW(ParseIntList("a,b", "--balance"), std::invalid_argument);
  EXPECT_THROW(ParseIntList("3,", "--balance"), std::invalid_argument);
  EXPECT_EQ(FormatIntList({3, 2}), "3,2");
}

}  // namespace
}  // namespace tspipe
