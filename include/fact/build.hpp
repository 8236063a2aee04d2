// Kernel builds: the nvcc command per family, the content-addressed kernel
// cache ($FACT_CACHE_DIR/kernels/<key>/lib<name>.so, compile log beside it) and
// parallel compilation with a memory-aware job count.
// Contract: compile_all never throws for a failing compile; each result says
// how it ended (compile_error with the first error lines as reason).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "fact/variant.hpp"

namespace fact {

// What a kernel build depends on besides its source.
struct Toolchain {
  std::string nvcc;            // executable (FACT_NVCC or "nvcc")
  std::string nvcc_version;    // full `nvcc --version` text
  std::string cutlass_dir;     // root with include/ and tools/util/include/
  std::string cutlass_commit;  // recorded commit, else "unrecorded:<hash of include/cutlass/version.h>"
  std::string source_dir;      // FACT tree: include/ and templates/
  // Short identity recorded with registry outcomes: "cutlass <commit> nvcc <release>".
  std::string id() const;
};

// Finds nvcc and CUTLASS. On failure returns nullopt and sets `why` to what is
// missing and how to get it.
std::optional<Toolchain> resolve_toolchain(std::string* why);

// nvcc flags for a family on a target arch ("sm90a" or "sm8x"): the common
// flags, include dirs excluded (they depend on the machine, not the kernel).
// sm90 / sm90split -> sm_90a; sm80 -> compute_80 PTX compiled to the target's
// SASS (sm_90 on an sm90a target: sm_80 SASS does not load on Hopper).
std::vector<std::string> nvcc_flags(KernelArch family, const std::string& target_arch);

// Full argv: nvcc, flags, include dirs, -o output, source.
std::vector<std::string> nvcc_command(const Toolchain& tc, const std::vector<std::string>& flags,
                                      const std::string& source_path, const std::string& output_path);

// xxh3-128 (hex) over the FACT headers `source` reaches through quoted
// #includes, transitively (templates/, then include/ under `source_dir`), with
// their paths: editing a template recompiles only the kernels that include it.
std::string templates_digest(const std::string& source_dir, const std::string& source);

// Cache key: xxh3-128 hex of (CUTLASS commit, nvcc --version, flags, generated
// source, templates digest). Any change to one of them changes the key.
std::string kernel_cache_key(const std::string& cutlass_commit, const std::string& nvcc_version,
                             const std::vector<std::string>& flags, const std::string& source,
                             const std::string& templates_digest);

struct CompileJob {
  std::string name;    // variant name
  std::string source;  // generated .cu text
  std::vector<std::string> flags;
};

struct CompileResult {
  std::string name;
  std::string key;
  bool ok = false;
  bool cached = false;  // library (or a recorded deterministic failure) was already in the cache
  std::string library;  // absolute path of lib<name>.so when ok
  std::string log_path;
  std::string reason;   // compile_error: first error lines
  double seconds = 0.0;
};

// Cache folder of a key: <cache_root>/kernels/<key>.
std::string kernel_dir(const std::string& cache_root, const std::string& key);
// Where a compiled variant lives in the cache (it may not exist).
std::string cached_library_path(const std::string& cache_root, const std::string& key, const std::string& name);

// First lines of an nvcc log that carry errors (at most max_lines), for reasons.
std::string first_error_lines(const std::string& log, int max_lines = 4);

using CompileProgress = std::function<void(const CompileResult& done, int finished, int total)>;

// Compiles every job into the cache with up to `jobs` nvcc processes at once
// (0 = FACT_JOBS / memory-aware default). Results are in job order. A cache
// hit compiles nothing. A deterministic compile failure (nvcc exited non-zero)
// is recorded in the cache too, so it is not retried for the same key.
std::vector<CompileResult> compile_all(const Toolchain& tc, const std::string& cache_root,
                                       const std::vector<CompileJob>& jobs_in, int jobs,
                                       const CompileProgress& progress = nullptr);

}  // namespace fact
