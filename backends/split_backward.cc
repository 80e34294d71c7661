#include "backends/split_backward.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <deque>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace tspipe {
namespace {

using torch::autograd::Edge;
using torch::autograd::Node;
using torch::autograd::variable_list;

// Keeps the gradient flowing into a node the first time the node runs (the
// input-gradient pass); later runs (the weight pass starting there) leave
// it alone.
class Capture : public torch::autograd::FunctionPreHook {
 public:
  explicit Capture(std::shared_ptr<variable_list> into) : into_(std::move(into)) {}
  variable_list operator()(const variable_list& grads) override {
    if (into_->empty()) *into_ = grads;
    return grads;
  }

 private:
  std::shared_ptr<variable_list> into_;
};

}  // namespace

struct SplitBackward::State {
  std::vector<torch::Tensor> outputs, output_grads, inputs;
  // Parameters whose gradients flow only through `nodes`, and the
  // gradients recorded there. One group per set of shared boundary nodes
  // (a layer's weight and bias share its node).
  struct Group {
    std::vector<std::shared_ptr<Node>> nodes;
    std::vector<std::shared_ptr<variable_list>> grads;
    torch::autograd::edge_list params;
  };
  std::vector<Group> groups;
  torch::autograd::edge_list fallback;
  int boundary_params = 0;
  bool input_done = false, weight_done = false;
};

SplitBackward::SplitBackward(std::vector<torch::Tensor> outputs,
                             std::vector<torch::Tensor> output_grads,
                             const std::vector<torch::Tensor>& inputs,
                             const std::vector<torch::Tensor>& params)
    : state_(std::make_unique<State>()) {
  TORCH_CHECK(outputs.size() == output_grads.size(), "split backward: ", outputs.size(),
              " outputs but ", output_grads.size(), " output gradients");
  State& s = *state_;
  s.outputs = std::move(outputs);
  s.output_grads = std::move(output_grads);
  s.inputs = inputs;
  // An input computed in this graph would have its grad_fn reached (and
  // not run) by the input pass, so a boundary node there would record
  // nothing: the executor's inputs are leaves, and so must these be.
  for (const torch::Tensor& t : s.inputs) {
    TORCH_CHECK(t.is_leaf(), "split backward: stage inputs must be leaves of the graph");
  }

  // The graph, with each node's parents (the nodes whose gradient flows
  // into it): the autograd graph only links towards the inputs.
  std::unordered_map<Node*, std::vector<Node*>> parents;
  std::unordered_map<Node*, std::shared_ptr<Node>> nodes;
  std::unordered_set<Node*> roots;
  std::deque<Node*> queue;
  for (const torch::Tensor& t : s.outputs) {
    std::shared_ptr<Node> fn = torch::autograd::impl::gradient_edge(t).function;
    if (!fn) continue;
    roots.insert(fn.get());
    if (nodes.emplace(fn.get(), fn).second) queue.push_back(fn.get());
  }
  while (!queue.empty()) {
    Node* node = queue.front();
    queue.pop_front();
    for (const Edge& e : node->next_edges()) {
      if (!e.is_valid()) continue;
      parents[e.function.get()].push_back(node);
      if (nodes.emplace(e.function.get(), e.function).second) queue.push_back(e.function.get());
    }
  }
  // Nodes that depend on an input: the input-gradient pass runs them.
  std::unordered_set<Node*> on_input_path;
  for (const torch::Tensor& t : s.inputs) {
    Node* fn = torch::autograd::impl::gradient_edge(t).function.get();
    if (fn != nullptr && nodes.count(fn) && on_input_path.insert(fn).second) queue.push_back(fn);
  }
  while (!queue.empty()) {
    Node* node = queue.front();
    queue.pop_front();
    for (Node* p : parents[node]) {
      if (on_input_path.insert(p).second) queue.push_back(p);
    }
  }

  // Each parameter's boundary nodes: walking from it towards the outputs,
  // the first nodes on the input path. Reaching an output off that path
  // means part of its gradient bypasses the input pass: fallback.
  std::vector<std::unordered_set<Node*>> group_nodes;
  for (const torch::Tensor& p : params) {
    if (!p.requires_grad()) continue;
    Edge edge = torch::autograd::impl::gradient_edge(p);
    Node* start = edge.function.get();
    if (start == nullptr || !nodes.count(start)) continue;  // Unused here.
    std::unordered_set<Node*> boundary, seen{start};
    bool bypass = roots.count(start) > 0;
    std::deque<Node*> walk{start};
    while (!walk.empty() && !bypass) {
      Node* node = walk.front();
      walk.pop_front();
      for (Node* parent : parents[node]) {
        if (on_input_path.count(parent)) {
          boundary.insert(parent);
        } else if (roots.count(parent)) {
          bypass = true;
        } else if (seen.insert(parent).second) {
          walk.push_back(parent);
        }
      }
    }
    if (bypass || boundary.empty()) {
      s.fallback.push_back(edge);
      continue;
    }
    // Merge with every group sharing one of these nodes.
    int into = -1;
    for (int g = 0; g < static_cast<int>(group_nodes.size()); ++g) {
      bool shares = std::any_of(boundary.begin(), boundary.end(),
                                [&](Node* n) { return group_nodes[g].count(n) > 0; });
      if (!shares) continue;
      if (into < 0) {
        into = g;
        continue;
      }
      group_nodes[into].insert(group_nodes[g].begin(), group_nodes[g].end());
      auto& from = s.groups[g].params;
      s.groups[into].params.insert(s.groups[into].params.end(), from.begin(), from.end());
      group_nodes.erase(group_nodes.begin() + g);
      s.groups.erase(s.groups.begin() + g);
      --g;
    }
    if (into < 0) {
      into = static_cast<int>(group_nodes.size());
      group_nodes.emplace_back();
      s.groups.emplace_back();
    }
    group_nodes[into].insert(boundary.begin(), boundary.end());
    s.groups[into].params.push_back(edge);
  }

  // A group whose boundary nodes feed one another along the input path
  // would count that path twice when the weight pass starts at both: its
  // parameters fall back too.
  for (size_t g = 0; g < s.groups.size();) {
    bool feeds = false;
    for (Node* from : group_nodes[g]) {
      std::unordered_set<Node*> seen;
      std::deque<Node*> walk{from};
      while (!walk.empty() && !feeds) {
        Node* node = walk.front();
        walk.pop_front();
        for (const Edge& e : node->next_edges()) {
          Node* c = e.function.get();
          if (c == nullptr || !on_input_path.count(c) || !seen.insert(c).second) continue;
          if (group_nodes[g].count(c)) feeds = true;
          walk.push_back(c);
        }
      }
      if (feeds) break;
    }
    if (feeds) {
      s.fallback.insert(s.fallback.end(), s.groups[g].params.begin(), s.groups[g].params.end());
      s.groups.erase(s.groups.begin() + g);
      group_nodes.erase(group_nodes.begin() + g);
      continue;
    }
    for (Node* n : group_nodes[g]) {
      auto grads = std::make_shared<variable_list>();
      nodes.at(n)->add_pre_hook(std::make_unique<Capture>(grads));
      s.groups[g].nodes.push_back(nodes.at(n));
      s.groups[g].grads.push_back(std::move(grads));
    }
    s.boundary_params += static_cast<int>(s.groups[g].params.size());
    ++g;
  }
}

SplitBackward::~SplitBackward() = default;

std::vector<torch::Tensor> SplitBackward::InputGradients() {
  State& s = *state_;
  TORCH_CHECK(!s.input_done, "split backward: the input gradients were already computed");
  s.input_done = true;
  std::vector<torch::Tensor> grads(s.inputs.size());
  if (!s.inputs.empty() && !s.outputs.empty()) {
    grads = torch::autograd::grad(s.outputs, s.inputs, s.output_grads, /*retain_graph=*/true,
                                  /*create_graph=*/false, /*allow_unused=*/true);
  }
  if (s.fallback.empty()) {
    // Only the boundary nodes (and what hangs below them) matter to the
    // weight pass: the output gradient and the part of the graph above
    // them go now rather than at the W.
    s.outputs.clear();
    s.output_grads.clear();
    s.inputs.clear();
  }
  return grads;
}

void SplitBackward::AccumulateWeightGradients() {
  State& s = *state_;
  TORCH_CHECK(s.input_done, "split backward: the weight pass runs after the input pass");
  TORCH_CHECK(!s.weight_done, "split backward: the weight gradients were already accumulated");
  s.weight_done = true;
  torch::autograd::Engine& engine = torch::autograd::Engine::get_default_engine();
  // The fallback first: it may run nodes the groups' passes run too, so it
  // keeps the graph.
  if (!s.fallback.empty() && !s.outputs.empty()) {
    torch::autograd::edge_list roots;
    for (const torch::Tensor& t : s.outputs) roots.push_back(torch::autograd::impl::gradient_edge(t));
    engine.execute(roots, s.output_grads, /*keep_graph=*/true, /*create_graph=*/false,
                   /*accumulate_grad=*/true, s.fallback);
  }
  for (const State::Group& g : s.groups) {
    torch::autograd::edge_list roots;
    variable_list grads;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      for (size_t j = 0; j < g.grads[i]->size(); ++j) {
        if (!(*g.grads[i])[j].defined()) continue;
        roots.emplace_back(g.nodes[i], static_cast<uint32_t>(j));
        grads.push_back((*g.grads[i])[j]);
      }
    }
    // No gradient reached the group: as in a whole backward, its
    // parameters get none.
    if (roots.empty()) continue;
    // No node runs in two groups' passes (a node on both would be a
    // boundary node of both, which merges them), so each pass frees what
    // it has used as it goes, as a whole backward does.
    engine.execute(roots, grads, /*keep_graph=*/false, /*create_graph=*/false,
                   /*accumulate_grad=*/true, g.params);
  }
  // Dropping the outputs and the boundary nodes frees the graph (and the
  // activations it saved).
  s.groups.clear();
  s.outputs.clear();
  s.output_grads.clear();
  s.inputs.clear();
}

int SplitBackward::boundary_params() const { return state_->boundary_params; }
int SplitBackward::fallback_params() const { return static_cast<int>(state_->fallback.size()); }

}  // namespace tspipe
