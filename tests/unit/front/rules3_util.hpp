// Helpers for the transformer-block rule tests (attention, epilogue chain, layernorm):
// load a captured fixture of tests/fixtures/ir/captured3, run one named rule at a
// node, and plan a graph checking that every node is accounted for exactly once.
#pragma once

#include <map>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "fact/discover.hpp"
#include "fact/rules.hpp"
#include "test_util.hpp"

namespace fact::test3 {

inline Graph captured3(const std::string& name) {
  return load_graph(std::string(FACT_TEST_DATA_DIR) + "/fixtures/ir/captured3/" + name + ".json");
}

// The builtin rule called `rule` rooted at the node's op (nullptr when none).
inline const Rule* rule_at(const Graph& g, const std::string& node_id, const std::string& rule) {
  const Node* n = g.find_node(node_id);
  if (!n) return nullptr;
  for (const Rule* r : RuleSet::builtin().for_op(n->op)) {
    if (r->name == rule) return r;
  }
  return nullptr;
}

inline MatchOutcome run_at(const Graph& g, const std::string& node_id, const std::string& rule) {
  const Rule* r = rule_at(g, node_id, rule);
  if (!r) {
    ADD_FAILURE() << "no rule '" << rule << "' at node '" << node_id << "'";
    return MatchOutcome::reject("no rule");
  }
  return r->match(g, *g.find_node(node_id));
}

// Plans the graph; fails the test when a node is missing or appears twice.
inline nlohmann::json plan_checked(const Graph& g, double tol = 1e-4) {
  DiscoverOptions o;
  o.tolerance = tol;
  o.use_registry = false;
  nlohmann::json plan = build_plan(g, o, nullptr);
  std::map<std::string, int> seen;
  for (const auto& p : plan["patterns"]) {
    for (const auto& n : p["nodes"]) seen[n.get<std::string>()]++;
  }
  for (const auto& u : plan["unmatched"]) seen[u["node"].get<std::string>()]++;
  for (const Node& n : g.nodes) EXPECT_EQ(seen[n.id], 1) << "node " << n.id << " in " << g.path;
  EXPECT_EQ(seen.size(), g.nodes.size()) << g.path;
  return plan;
}

// Patterns of the plan with this rule name.
inline std::vector<nlohmann::json> patterns_of(const nlohmann::json& plan, const std::string& rule) {
  std::vector<nlohmann::json> out;
  for (const auto& p : plan["patterns"]) {
    if (p["rule"] == rule) out.push_back(p);
  }
  return out;
}

// The Match `rule` makes at `node_id`; a test failure (and an empty Match) where it rejects.
inline Match match_at(const Graph& g, const std::string& node_id, const std::string& rule) {
  MatchOutcome o = run_at(g, node_id, rule);
  EXPECT_TRUE(o.match) << node_id << ": " << o.reason;
  return o.match ? *o.match : Match{};
}

// The Match a pattern of the plan came from, re-run at its root (payloads live on Match).
inline Match rematch(const Graph& g, const nlohmann::json& pattern) {
  return match_at(g, pattern["root"], pattern["rule"]);
}

inline std::string unmatched_reason(const nlohmann::json& plan, const std::string& node) {
  for (const auto& u : plan["unmatched"]) {
    if (u["node"] == node) return u["reason"];
  }
  return "";
}

}  // namespace fact::test3
