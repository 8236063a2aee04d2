// Discover: graph IR -> plan.json (docs/CONTRACTS.md §2).
// Rules find patterns; the cost model turns each pattern's work into an eager
// estimate and a best estimate at the tolerance; registry winners replace the
// estimate with measured times; every node no pattern covers is listed with why.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "fact/ir.hpp"
#include "fact/rules.hpp"

namespace fact {

class Registry;

inline constexpr int kPlanVersion = 1;

// ---- cost model (src/discover/cost_model.cpp): the ONE table of measured ceilings ----

struct DeviceCeilings {
  const char* arch;            // plan arch spelling
  const char* card;
  double hbm_bytes_per_s;
  double fp32_simt_flops;      // cuBLAS fp32 (PyTorch's default for fp32 matmul)
  double tf32_flops;
  double bf16_flops;           // also fp16
  double fp32_faithful_flops;  // split modes (f16x3 / tf32x3) on the fp32 problem
  const char* fp32_faithful_math;
};

// nullptr for an arch without a table.
const DeviceCeilings* ceilings_for(const std::string& arch);
std::string known_archs();  // "sm90a, sm90, sm80"

struct CostEstimate {
  double flops = 0.0, bytes = 0.0;
  double eager_ms = 0.0, best_ms = 0.0, gain_ms = 0.0;
  std::string eager_math, best_math;
  // The best kernel's time is its bytes at the memory roofline (not its FLOPs): with
  // gain_ms <= 0, eager already moves the same bytes and no kernel can win.
  bool memory_bound = false;
};

// Tolerance classes (DESIGN.md "Precision is a policy"): for fp32 inputs,
// tol >= 1e-2 admits bf16 operands; 1e-4 <= tol < 1e-2 needs an fp32-faithful split
// mode; tol < 1e-4 keeps fp32 SIMT. 16-bit inputs run on 16-bit tensor cores in
// eager and in FACT alike.
CostEstimate estimate_cost(const Workload& work, double tolerance, const DeviceCeilings& device);

// KernelBench's rule: 1e-4 when any graph output is float32 (or wider), else 1e-2.
double default_tolerance(const Graph& graph);

// ---- planner (src/discover/planner.cpp) ----

struct DiscoverOptions {
  std::optional<double> tolerance;  // nullopt: default_tolerance(graph)
  std::string arch = "sm90a";
  bool use_registry = true;
  std::string registry_path;        // "" = Registry::default_path(); a missing file is not created
  std::string ir_path;              // written into plan "ir" (absolute path recommended)
};

class PlanError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Builds the plan document. `registry` may be nullptr (no look-ups). Throws
// PlanError for an unknown arch or a tolerance that is not positive.
nlohmann::json build_plan(const Graph& graph, const DiscoverOptions& options, const Registry* registry,
                          const RuleSet& rules = RuleSet::builtin());

// CLI glue: loads the IR, opens the registry if it exists, writes plan.json and
// prints a summary. Returns 0, or 2 with one clear line on stderr for bad input.
int run_discover(const std::string& ir_path, const std::string& plan_path, const DiscoverOptions& options);

}  // namespace fact
