// The one typed table of FACT_ environment knobs (docs/CONTRACTS.md §9), and
// tool resolution that several stages share (CUTLASS, nvcc, python).
// Contract: an invalid value is reported once on stderr and the default is used;
// nothing here throws or exits.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace fact {

enum class EnvType { Path, String, Int, Choice };

struct EnvKnob {
  const char* name;
  EnvType type;
  const char* default_doc;   // how the default is chosen
  const char* doc;
  const char* choices;       // EnvType::Choice: "a|b|c"; otherwise ""
};

// All knobs, in the order `fact env` prints them.
const std::vector<EnvKnob>& env_knobs();

// The raw value if set and non-empty.
std::optional<std::string> env_raw(const char* name);
// The value `fact env` shows for a knob: the set value, else the computed default.
std::string env_effective(const EnvKnob& knob);

// Absolute path of an executable found on $PATH (or `name` itself if it holds a '/').
std::optional<std::string> find_executable(const std::string& name);

// "~/x" -> "$HOME/x".
std::string expand_user(const std::string& path);

namespace env {
std::string cache_dir();      // FACT_CACHE_DIR, default ~/.cache/fact
std::string registry_path();  // FACT_REGISTRY, default <cache_dir>/registry.sqlite
std::string nvcc();           // FACT_NVCC, default nvcc on PATH, else /usr/local/cuda/bin/nvcc if present
int jobs();                   // FACT_JOBS, default min(cores, available memory / 3.5 GB), >= 1
std::string python();         // FACT_PYTHON, default "python3"
std::string arch();           // FACT_ARCH, default from nvidia-smi's compute capability, else "sm90a"
std::string variants();       // FACT_VARIANTS: "default" | "all"
bool debug_logging();         // FACT_LOG=debug
bool keep_slower_kernels();   // FACT_SLOWER=keep: bind a kernel even where PyTorch ran its pattern faster
}  // namespace env

// Memory-aware compile parallelism: min(cores, MemAvailable / bytes_per_job), >= 1.
int default_jobs(double bytes_per_job = 3.5e9);
// "sm90a" for compute capability 9.0, "sm80" for 8.x, "sm<MAJOR><MINOR>" otherwise;
// nullopt when nvidia-smi is absent or reports nothing.
std::optional<std::string> detect_gpu_arch();

// ---- CUTLASS ----
inline constexpr const char* kCutlassTag = "v4.7.0";
inline constexpr const char* kCutlassCommit = "dcf215af68a2d08d305076c152a06f201728cd53";

// Resolution order: $CUTLASS_DIR, <source>/third_party/cutlass, <cache_dir>/cutlass-v4.7.0.
// A candidate qualifies when it has include/cutlass/cutlass.h and, if it carries a
// .fact-cutlass-commit file, that file names the pinned commit. On failure returns
// nullopt and, if why != nullptr, says what was tried and how to get CUTLASS.
std::optional<std::string> find_cutlass_dir(std::string* why);
// The folders find_cutlass_dir tries, in order, each with where it came from.
std::vector<std::pair<std::string, std::string>> cutlass_search_path();
// Commit recorded in <dir>/.fact-cutlass-commit, "" when absent.
std::string cutlass_commit(const std::string& dir);

// The FACT source tree (for python/ and templates/): FACT_SOURCE_DIR at build time.
std::string source_dir();

}  // namespace fact
