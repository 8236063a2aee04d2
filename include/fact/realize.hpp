// Realize: plan.json -> emitted sources -> parallel nvcc (content-addressed
// cache) -> verify + time every candidate in a worker process -> registry ->
// realized.json (docs/CONTRACTS.md §3-§6).
#pragma once

#include <optional>
#include <string>

namespace fact {

struct RealizeOptions {
  std::string plan_path;           // input plan.json
  std::string output_path;         // realized.json to write
  std::optional<double> tolerance; // overrides the plan's tolerance
  int jobs = 0;                    // 0 = memory- and core-aware default (FACT_JOBS)
  bool compile_only = false;       // emit + compile into the cache, no verification (no GPU needed)
  bool use_registry = true;        // reuse a recorded winner when its library is cached
  // With a reused winner: false trusts the verification and timing the registry
  // recorded for this kernel (same source, flags, templates and toolchain: the
  // cached library is that binary); true verifies and times it again.
  bool reverify = false;
  std::string variant_set = "default";  // "default" | "all" (FACT_VARIANTS)
  std::string filter;              // '|'-separated substrings; a variant is kept if its name contains one ("" = all)
  std::string registry_path;       // "" = Registry::default_path()
};

// Returns 0 on success (patterns that could not be realized fall back, which is
// success); non-zero only when nothing could be attempted (bad plan, no nvcc,
// no CUTLASS), after printing what is missing and how to get it.
int run_realize(const RealizeOptions& options);

}  // namespace fact
