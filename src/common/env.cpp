// FACT_ knobs: one table, typed accessors, and CUTLASS / GPU resolution.
#include "fact/env.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "fact/log.hpp"
#include "fact/process.hpp"

namespace fact {

namespace fs = std::filesystem;

const std::vector<EnvKnob>& env_knobs() {
  static const std::vector<EnvKnob> knobs = {
      {"FACT_CACHE_DIR", EnvType::Path, "~/.cache/fact",
       "kernel cache, registry and pinned CUTLASS live here", ""},
      {"FACT_REGISTRY", EnvType::Path, "$FACT_CACHE_DIR/registry.sqlite",
       "SQLite registry of candidate outcomes and winners", ""},
      {"CUTLASS_DIR", EnvType::Path, "third_party/cutlass, then $FACT_CACHE_DIR/cutlass-v4.7.0",
       "CUTLASS v4.7.0 checkout (include/, tools/util/include/, examples/)", ""},
      {"FACT_NVCC", EnvType::Path, "nvcc on PATH, else /usr/local/cuda/bin/nvcc", "CUDA compiler used by fact realize",
       ""},
      {"FACT_JOBS", EnvType::Int, "min(cores, available memory / 3.5 GB)",
       "parallel nvcc jobs (an sm90 CUTLASS TU needs up to 3.5 GB)", ""},
      {"FACT_PYTHON", EnvType::Path, "python3", "Python with torch, for capture and the verification worker", ""},
      {"FACT_ARCH", EnvType::Choice, "from nvidia-smi, else sm90a", "target architecture of discover and realize",
       "sm90a|sm90|sm80"},
      {"FACT_VARIANTS", EnvType::Choice, "default", "variant set realize builds per pattern", "default|all"},
      {"FACT_LOG", EnvType::Choice, "info", "log level (debug adds per-step detail)", "info|debug"},
      {"FACT_SLOWER", EnvType::Choice, "fallback",
       "a pattern whose fastest verified kernel is not faster than PyTorch on it: fallback keeps PyTorch, keep "
       "binds the kernel anyway (tests of small modules)",
       "fallback|keep"},
      {"FACT_SOURCE_DIR", EnvType::Path, "the build's source tree, else two levels above the fact executable",
       "FACT source tree whose templates/ and python/ realize and capture use", ""},
      // FACT_PATTERNS and FACT_HANDOFFS are read by python/fact/runtime.py (install),
      // not by the C++ stages: listed here because this is the one table of knobs.
      {"FACT_PATTERNS", EnvType::String, "all",
       "patterns a composed module binds (ablation): all, none, or a comma list of pattern ids, rule:NAME, "
       "module:PATH; the rest run in PyTorch",
       ""},
      {"FACT_HANDOFFS", EnvType::Choice, "1",
       "0 runs the manifest's operand hand-offs (GEMM or LayerNorm -> GEMM, and chains) as separate kernels",
       "0|1"},
  };
  return knobs;
}

std::optional<std::string> env_raw(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

std::optional<std::string> find_executable(const std::string& name) {
  auto runnable = [](const fs::path& p) {
    std::error_code ec;
    return fs::is_regular_file(p, ec) && ::access(p.c_str(), X_OK) == 0;
  };
  if (name.find('/') != std::string::npos) {
    if (runnable(name)) return name;
    return std::nullopt;
  }
  const std::string path = env_raw("PATH").value_or("/usr/bin:/bin");
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    fs::path candidate = fs::path(end > start ? path.substr(start, end - start) : ".") / name;
    if (runnable(candidate)) return candidate.string();
    start = end + 1;
  }
  return std::nullopt;
}

std::string expand_user(const std::string& path) {
  if (path.empty() || path[0] != '~') return path;
  if (path.size() > 1 && path[1] != '/') return path;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + path.substr(1);
}

namespace {

const EnvKnob& knob(const char* name) {
  for (const auto& k : env_knobs()) {
    if (std::string(k.name) == name) return k;
  }
  return env_knobs().front();  // unreachable: callers pass names from the table
}

// Warns once per knob about an invalid value.
void warn_invalid(const char* name, const std::string& value, const std::string& expected) {
  static std::mutex m;
  static std::set<std::string> warned;
  std::lock_guard<std::mutex> lock(m);
  if (warned.insert(name).second) {
    log::warn("{}='{}' is invalid ({}); using the default", name, value, expected);
  }
}

std::optional<std::string> choice(const char* name) {
  auto v = env_raw(name);
  if (!v) return std::nullopt;
  std::string choices = std::string("|") + knob(name).choices + "|";
  if (choices.find("|" + *v + "|") == std::string::npos) {
    warn_invalid(name, *v, std::string("one of ") + knob(name).choices);
    return std::nullopt;
  }
  return v;
}

}  // namespace

namespace env {

std::string cache_dir() { return expand_user(env_raw("FACT_CACHE_DIR").value_or("~/.cache/fact")); }

std::string registry_path() {
  if (auto v = env_raw("FACT_REGISTRY")) return expand_user(*v);
  return (fs::path(cache_dir()) / "registry.sqlite").string();
}

std::string nvcc() {
  if (auto v = env_raw("FACT_NVCC")) return expand_user(*v);
  if (find_executable("nvcc")) return "nvcc";
  // CUDA installs outside PATH by default; realize should find it without setup.
  if (find_executable("/usr/local/cuda/bin/nvcc")) return "/usr/local/cuda/bin/nvcc";
  return "nvcc";
}

int jobs() {
  if (auto v = env_raw("FACT_JOBS")) {
    char* end = nullptr;
    long n = std::strtol(v->c_str(), &end, 10);
    if (end && *end == '\0' && n >= 1 && n <= 1024) return static_cast<int>(n);
    warn_invalid("FACT_JOBS", *v, "a positive integer");
  }
  return default_jobs();
}

std::string python() { return env_raw("FACT_PYTHON").value_or("python3"); }

std::string arch() {
  if (auto v = choice("FACT_ARCH")) return *v;
  static const std::string detected = detect_gpu_arch().value_or("sm90a");
  return detected;
}

std::string variants() { return choice("FACT_VARIANTS").value_or("default"); }

bool debug_logging() { return choice("FACT_LOG").value_or("info") == "debug"; }

bool keep_slower_kernels() { return choice("FACT_SLOWER").value_or("fallback") == "keep"; }

}  // namespace env

int default_jobs(double bytes_per_job) {
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  if (cores < 1) cores = 1;
  double available = 0.0;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  double value_kb = 0.0;
  std::string unit;
  while (meminfo >> key >> value_kb >> unit) {
    if (key == "MemAvailable:") {
      available = value_kb * 1024.0;
      break;
    }
  }
  long by_memory = available > 0.0 ? static_cast<long>(available / bytes_per_job) : cores;
  long jobs = std::min(cores, by_memory);
  return static_cast<int>(jobs < 1 ? 1 : jobs);
}

std::optional<std::string> detect_gpu_arch() {
  ProcessOptions options;
  options.timeout_s = 20.0;
  ProcessResult r = run_process({"nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"}, options);
  if (!r.ok()) return std::nullopt;
  std::istringstream lines(r.output);
  std::string first;
  std::getline(lines, first);
  int major = 0, minor = 0;
  if (std::sscanf(first.c_str(), "%d.%d", &major, &minor) != 2) return std::nullopt;
  if (major == 9 && minor == 0) return std::string("sm90a");
  if (major == 8) return std::string("sm80");
  return fmt::format("sm{}{}", major, minor);
}

std::string env_effective(const EnvKnob& k) {
  const std::string name = k.name;
  if (name == "FACT_CACHE_DIR") return env::cache_dir();
  if (name == "FACT_REGISTRY") return env::registry_path();
  if (name == "CUTLASS_DIR") {
    std::string why;
    auto dir = find_cutlass_dir(&why);
    return dir ? *dir : "(not found)";
  }
  if (name == "FACT_NVCC") return env::nvcc();
  if (name == "FACT_JOBS") return std::to_string(env::jobs());
  if (name == "FACT_PYTHON") return env::python();
  if (name == "FACT_ARCH") return env::arch();
  if (name == "FACT_VARIANTS") return env::variants();
  if (name == "FACT_LOG") return env::debug_logging() ? "debug" : "info";
  if (name == "FACT_PATTERNS") return env_raw(k.name).value_or("all");
  if (name == "FACT_HANDOFFS") return env_raw(k.name).value_or("1");
  if (name == "FACT_SOURCE_DIR") return source_dir();
  return env_raw(k.name).value_or("");
}

namespace {
bool is_source_tree(const fs::path& dir) {
  std::error_code ec;
  return !dir.empty() && fs::is_directory(dir / "templates", ec) && fs::is_directory(dir / "python" / "fact", ec);
}
}  // namespace

std::string source_dir() {
  // A `fact` binary carried to another machine keeps the path it was built at;
  // templates/ and python/ then live elsewhere, and nvcc would fail on a missing
  // include with no hint why. Order: $FACT_SOURCE_DIR, the build-time path, the
  // tree two levels above the executable (build/<preset>/fact), the build-time path.
  if (auto env = env_raw("FACT_SOURCE_DIR")) return *env;
#ifdef FACT_SOURCE_DIR
  const fs::path built = FACT_SOURCE_DIR;
#else
  const fs::path built = ".";
#endif
  if (is_source_tree(built)) return built.string();
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec && is_source_tree(exe.parent_path().parent_path().parent_path()))
    return exe.parent_path().parent_path().parent_path().string();
  return built.string();
}

std::string cutlass_commit(const std::string& dir) {
  std::ifstream in(fs::path(dir) / ".fact-cutlass-commit");
  std::string commit;
  if (in) in >> commit;
  return commit;
}

std::vector<std::pair<std::string, std::string>> cutlass_search_path() {
  std::vector<std::pair<std::string, std::string>> candidates;  // (dir, where it came from)
  if (const auto from_env = env_raw("CUTLASS_DIR")) candidates.emplace_back(expand_user(*from_env), "$CUTLASS_DIR");
  candidates.emplace_back((fs::path(source_dir()) / "third_party" / "cutlass").string(), "third_party/cutlass");
  candidates.emplace_back((fs::path(env::cache_dir()) / (std::string("cutlass-") + kCutlassTag)).string(),
                          "the FACT cache");
  return candidates;
}

std::optional<std::string> find_cutlass_dir(std::string* why) {
  std::string tried;
  for (const auto& [dir, origin] : cutlass_search_path()) {
    std::error_code ec;
    if (!fs::exists(fs::path(dir) / "include" / "cutlass" / "cutlass.h", ec)) {
      tried += fmt::format("\n  {} ({}): no include/cutlass/cutlass.h", dir, origin);
      // An explicit CUTLASS_DIR that is wrong is an error, not a reason to pick another copy.
      if (origin == "$CUTLASS_DIR") break;
      continue;
    }
    const std::string commit = cutlass_commit(dir);
    if (!commit.empty() && commit != kCutlassCommit) {
      tried += fmt::format("\n  {} ({}): .fact-cutlass-commit is {}, FACT pins {} ({})", dir, origin, commit,
                           kCutlassCommit, kCutlassTag);
      if (origin == "$CUTLASS_DIR") break;
      continue;
    }
    return fs::weakly_canonical(fs::path(dir), ec).string();
  }
  if (why) {
    *why = fmt::format(
        "CUTLASS {} not found: run ../shared/scripts/cutlass-extract <git dir> (fills {}/cutlass-{}), clone "
        "https://github.com/NVIDIA/cutlass at tag {} into third_party/cutlass, or set CUTLASS_DIR. Tried:{}",
        kCutlassTag, env::cache_dir(), kCutlassTag, kCutlassTag, tried);
  }
  return std::nullopt;
}

}  // namespace fact
