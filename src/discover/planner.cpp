// The planner: apply rules at every root op in graph order, cost each match,
// consult the registry, order by expected gain, and account for every node.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <fmt/format.h>

#include "fact/discover.hpp"
#include "fact/log.hpp"
#include "fact/registry.hpp"

namespace fact {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct Planned {
  const Rule* rule = nullptr;
  Match match;
  CostEstimate cost;
  std::string cost_source = "model";
  json registry = json{{"known", false}};
  size_t graph_order = 0;
  std::string id;
};

std::string join(const std::vector<std::string>& parts, const char* sep) {
  std::string out;
  for (const auto& p : parts) {
    if (!out.empty()) out += sep;
    out += p;
  }
  return out;
}

// Fills `registry` and, on an exact problem match, replaces the estimates with
// measured times. A winner of the same shape class is reported, not used for
// timing: its problem differs, so its time is not this problem's time.
void consult_registry(const Registry& registry, const std::string& arch, double tolerance, Planned& p) {
  const std::string dtype = dtype_name(p.match.dtype);
  if (auto w = registry.find_winner(p.rule->name, dtype, arch, p.match.problem_key, tolerance)) {
    p.registry = json{{"known", true},       {"match", "problem_key"}, {"variant", w->variant},
                      {"math", w->math},     {"median_ms", w->median_ms}, {"baseline_ms", w->baseline_ms},
                      {"tolerance", w->tolerance}};
    p.cost.best_ms = w->median_ms;
    if (w->baseline_ms > 0.0) p.cost.eager_ms = w->baseline_ms;
    p.cost.best_math = w->math;
    p.cost.gain_ms = p.cost.eager_ms - p.cost.best_ms;
    p.cost_source = "registry";
    return;
  }
  if (auto w = registry.find_similar(p.rule->name, dtype, arch, p.match.shape_class, tolerance)) {
    p.registry = json{{"known", true},          {"match", "shape_class"},    {"variant", w->variant},
                      {"math", w->math},        {"median_ms", w->median_ms}, {"baseline_ms", w->baseline_ms},
                      {"tolerance", w->tolerance}, {"problem_key", w->problem_key}};
  }
}

json pattern_json(const Planned& p, const std::string& arch, int priority) {
  json j = {{"id", p.id},
            {"rule", p.match.rule},
            {"root", p.match.root},
            {"nodes", p.match.nodes},
            {"inputs", p.match.inputs},
            {"outputs", p.match.outputs},
            {"dtype", dtype_name(p.match.dtype)},
            {"arch", arch},
            {"priority", priority},
            {"problem_key", p.match.problem_key},
            {"shape_class", p.match.shape_class}};
  if (p.match.gemm) j["gemm"] = p.match.gemm->to_json();
  // Rule-specific payloads (attention, layernorm, epilogue_chain: CONTRACTS.md §2.1).
  for (auto it = p.match.payload.begin(); it != p.match.payload.end(); ++it) j[it.key()] = it.value();
  j["cost"] = {{"flops", p.cost.flops},
               {"bytes", p.cost.bytes},
               {"eager_ms_est", p.cost.eager_ms},
               {"best_ms_est", p.cost.best_ms},
               {"expected_gain_ms", p.cost.gain_ms},
               {"memory_bound", p.cost.memory_bound},
               {"eager_math", p.cost.eager_math},
               {"best_math", p.cost.best_math},
               {"source", p.cost_source}};
  j["registry"] = p.registry;
  return j;
}

}  // namespace

json build_plan(const Graph& graph, const DiscoverOptions& options, const Registry* registry, const RuleSet& rules) {
  const double tolerance = options.tolerance.value_or(default_tolerance(graph));
  if (!(tolerance > 0.0)) throw PlanError(fmt::format("tolerance must be positive, got {}", tolerance));
  const DeviceCeilings* device = ceilings_for(options.arch);
  if (!device) {
    throw PlanError(fmt::format("no cost table for arch '{}' (known: {})", options.arch, known_archs()));
  }

  std::vector<Planned> planned;
  std::map<std::string, size_t> covered_by;          // node id -> index in planned
  std::map<std::string, std::string> rejected;       // root node id -> joined reasons
  std::map<std::string, std::string> notes;          // node id -> why a rule left it alone
  json rejections = json::array();

  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node& node = graph.nodes[i];
    if (covered_by.count(node.id)) continue;
    const auto candidates = rules.for_op(node.op);
    if (candidates.empty()) continue;
    std::vector<std::string> reasons;
    bool matched = false;
    for (const Rule* rule : candidates) {
      MatchOutcome outcome;
      try {
        outcome = rule->match(graph, node);
      } catch (const std::exception& e) {
        outcome = MatchOutcome::reject(fmt::format("rule failed on this node: {}", e.what()));
      }
      if (outcome.match) {
        for (const auto& n : outcome.match->nodes) {
          auto it = covered_by.find(n);
          if (it != covered_by.end()) {
            outcome = MatchOutcome::reject(
                fmt::format("overlaps pattern {} (node '{}' is already covered)", planned[it->second].id, n));
            break;
          }
        }
      }
      if (!outcome.match && !outcome.applicable) continue;  // not this rule's pattern at all
      if (!outcome.match) {
        reasons.push_back(outcome.reason);
        rejections.push_back({{"node", node.id}, {"rule", rule->name}, {"reason", outcome.reason}});
        continue;
      }
      Planned p;
      p.rule = rule;
      p.match = std::move(*outcome.match);
      p.graph_order = i;
      p.id = fmt::format("p{}", planned.size());
      for (const auto& n : p.match.nodes) covered_by[n] = planned.size();
      for (const auto& [n, why] : p.match.notes) notes.emplace(n, why);
      planned.push_back(std::move(p));
      matched = true;
      break;
    }
    if (!matched && !reasons.empty()) rejected[node.id] = join(reasons, "; ");
  }

  for (auto& p : planned) {
    p.cost = estimate_cost(p.rule->estimate(p.match), tolerance, *device);
    if (registry) {
      try {
        consult_registry(*registry, options.arch, tolerance, p);
      } catch (const std::exception& e) {
        log::warn("registry look-up for {} failed ({}); using the cost model", p.match.problem_key, e.what());
      }
    }
  }

  std::vector<size_t> order(planned.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t x, size_t y) { return planned[x].cost.gain_ms > planned[y].cost.gain_ms; });

  json patterns = json::array();
  for (size_t rank = 0; rank < order.size(); ++rank) {
    patterns.push_back(pattern_json(planned[order[rank]], options.arch, static_cast<int>(rank)));
  }

  json unmatched = json::array();
  for (const Node& node : graph.nodes) {
    if (covered_by.count(node.id)) continue;
    std::string reason;
    if (auto it = rejected.find(node.id); it != rejected.end()) {
      reason = it->second;
    } else if (is_view_op(node.op)) {
      reason = "view op, runs in PyTorch";
      if (auto it = notes.find(node.id); it != notes.end()) reason += " (" + it->second + ")";
    } else if (auto it = notes.find(node.id); it != notes.end()) {
      reason = it->second;  // e.g. why a GEMM epilogue did not absorb this op
    } else {
      reason = fmt::format("no rule has root op '{}'", node.op);
    }
    unmatched.push_back({{"node", node.id}, {"op", node.op}, {"reason", reason}});
  }

  return json{{"fact_plan", kPlanVersion},
              {"ir", options.ir_path.empty() ? graph.path : options.ir_path},
              {"arch", options.arch},
              {"tolerance", tolerance},
              {"patterns", patterns},
              {"unmatched", unmatched},
              {"rejections", rejections}};
}

int run_discover(const std::string& ir_path, const std::string& plan_path, const DiscoverOptions& options_in) {
  DiscoverOptions options = options_in;
  Graph graph;
  try {
    graph = load_graph(ir_path);
  } catch (const std::exception& e) {
    log::error("{}", e.what());
    return 2;
  }
  std::error_code ec;
  if (options.ir_path.empty()) options.ir_path = fs::absolute(ir_path, ec).lexically_normal().string();

  std::unique_ptr<Registry> registry;
  if (options.use_registry) {
    const std::string path = options.registry_path.empty() ? Registry::default_path() : options.registry_path;
    // Discover only reads: a registry that does not exist yet means "nothing known".
    if (fs::exists(path, ec)) {
      try {
        registry = std::make_unique<Registry>(path);
      } catch (const std::exception& e) {
        log::warn("{}; planning without the registry", e.what());
      }
    } else {
      log::debug("registry {} does not exist yet; planning from the cost model", path);
    }
  }

  json plan;
  try {
    plan = build_plan(graph, options, registry.get());
  } catch (const std::exception& e) {
    log::error("{}", e.what());
    return 2;
  }

  const fs::path out(plan_path);
  if (out.has_parent_path()) fs::create_directories(out.parent_path(), ec);
  std::ofstream file(plan_path, std::ios::binary | std::ios::trunc);
  if (!file) {
    log::error("{}: cannot write the plan", plan_path);
    return 2;
  }
  file << plan.dump(2) << "\n";
  file.close();
  if (!file) {
    log::error("{}: write failed", plan_path);
    return 2;
  }

  log::info("fact discover: {} pattern(s), {} unmatched op(s), tolerance {:g}, arch {} -> {}",
            plan["patterns"].size(), plan["unmatched"].size(), plan["tolerance"].get<double>(),
            options.arch, plan_path);
  for (const auto& p : plan["patterns"]) {
    const auto& c = p["cost"];
    log::info("  {} [{}] {} at '{}': eager {:.4g} ms -> {:.4g} ms ({}, {}), gain {:.4g} ms", p["id"].get<std::string>(),
              p["priority"].get<int>(), p["problem_key"].get<std::string>(), p["root"].get<std::string>(),
              c["eager_ms_est"].get<double>(), c["best_ms_est"].get<double>(), c["best_math"].get<std::string>(),
              c["source"].get<std::string>(), c["expected_gain_ms"].get<double>());
  }
  for (const auto& u : plan["unmatched"]) {
    log::info("  unmatched {} ({}): {}", u["node"].get<std::string>(), u["op"].get<std::string>(),
              u["reason"].get<std::string>());
  }
  return 0;
}

}  // namespace fact
