// realized.json (docs/CONTRACTS.md §6): the outcome of `fact realize` per
// pattern, with every candidate's status and reason.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fact {

struct RealizedCandidate {
  std::string name;
  std::string status;  // winner | ok | wrong | compile_error | crash | cant_implement | skipped | ...
  std::string reason;
  std::optional<double> median_ms, max_abs_err, fail_frac;
  std::string library;  // set when it compiled
};

struct RealizedPattern {
  std::string id;
  std::string status = "fallback";  // realized | fallback
  std::string reason;               // fallback: why (every candidate's failure, summarized)
  std::string variant, library, math;
  std::optional<double> median_ms, baseline_median_ms, max_abs_err, fail_frac;
  bool from_registry = false;
  bool verification_reused = false;  // from_registry without verifying again (RealizeOptions::reverify)
  std::string rule, problem_key;  // added fields (v1-compatible)
  // Set when the kernel computes only the GEMM core of a plan pattern whose
  // output comes after the GEMM (an epilogue chain realize did not fuse):
  // the nodes and output the kernel replaces, and the plan's nodes left to PyTorch.
  std::vector<std::string> bound_nodes, bound_outputs, left_to_pytorch;
  // Set when the winner runs the pattern's epilogue chain in its epilogue (an sm90
  // EVT variant): how the kernel ABI's e / leaves bind (epilogue_emit.hpp,
  // docs/CONTRACTS.md §6); null otherwise.
  nlohmann::json fused_epilogue;
  std::vector<RealizedCandidate> candidates;
};

struct RealizedFile {
  std::string plan, ir;
  double tolerance = 1e-4;
  std::vector<RealizedPattern> patterns;
  double compile_s = 0.0, verify_s = 0.0, total_s = 0.0;
};

nlohmann::json realized_to_json(const RealizedFile& file);
// Writes through a temporary file and a rename; throws std::runtime_error on I/O failure.
void write_realized(const RealizedFile& file, const std::string& path);

// One-paragraph reason for a pattern none of whose candidates passed:
// counts per status and the first reason of each status.
std::string fallback_reason_from_candidates(const std::vector<RealizedCandidate>& candidates);

}  // namespace fact
