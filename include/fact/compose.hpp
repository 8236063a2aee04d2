// Compose: realized.json -> a drop-in KernelBench-format module directory
// (ModelNew.py, model_source.py, fact_manifest.json, libs/, report.md;
// docs/CONTRACTS.md §7).
#pragma once

#include <string>

namespace fact {

struct ComposeOptions {
  std::string realized_path;  // input realized.json
  std::string output_dir;     // folder to (re)write
};

// Returns 0 on success; prints the reason and returns non-zero otherwise.
int run_compose(const ComposeOptions& options);

}  // namespace fact
