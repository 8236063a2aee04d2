// `fact env` (the FACT_ knob table) and `fact doctor` (what this machine has,
// and for each missing piece how to get it).
#include <filesystem>
#include <memory>
#include <regex>
#include <sstream>

#include <fmt/format.h>

#include "commands.hpp"
#include "fact/env.hpp"
#include "fact/log.hpp"
#include "fact/process.hpp"
#include "fact/registry.hpp"

namespace fact::cli {

namespace fs = std::filesystem;

namespace {

int print_env() {
  for (const auto& k : env_knobs()) {
    const auto raw = env_raw(k.name);
    fmt::print("{}={}\n", k.name, env_effective(k));
    fmt::print("    {}{}\n", k.doc, k.choices[0] ? fmt::format(" (one of {})", k.choices) : "");
    fmt::print("    {}; default: {}\n", raw ? "set in the environment" : "not set", k.default_doc);
  }
  return 0;
}

std::string first_line(const std::string& text) {
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);
  return line;
}

struct Doctor {
  int missing = 0;
  void ok(const std::string& what, const std::string& detail) { fmt::print("  ok       {:<10} {}\n", what, detail); }
  void bad(const std::string& what, const std::string& detail) {
    ++missing;
    fmt::print("  MISSING  {:<10} {}\n", what, detail);
  }
  void note(const std::string& what, const std::string& detail) { fmt::print("  note     {:<10} {}\n", what, detail); }
};

int doctor() {
  Doctor d;
  ProcessOptions quick;
  quick.timeout_s = 60.0;
  fmt::print("fact doctor (source {})\n", source_dir());

  // nvcc
  const std::string nvcc = env::nvcc();
  ProcessResult r = run_process({nvcc, "--version"}, quick);
  if (r.ok()) {
    std::smatch m;
    const std::regex release("release ([0-9]+\\.[0-9]+)");
    std::string version = std::regex_search(r.output, m, release) ? m[1].str() : "unknown version";
    auto where = find_executable(nvcc);
    d.ok("nvcc", fmt::format("{} (release {})", where.value_or(nvcc), version));
  } else {
    d.bad("nvcc", fmt::format("'{}' {}: install the CUDA toolkit (>= 12.4, e.g. apt-get install cuda-toolkit) or set "
                              "FACT_NVCC=/path/to/nvcc; fact discover and the unit tests do not need it",
                              nvcc, r.started ? r.describe() : r.error));
  }

  // CUTLASS
  std::string why;
  if (auto dir = find_cutlass_dir(&why)) {
    const std::string commit = cutlass_commit(*dir);
    d.ok("CUTLASS", fmt::format("{} ({})", *dir,
                                commit.empty() ? std::string("no .fact-cutlass-commit: version not verified")
                                               : "commit " + commit.substr(0, 12) + ", " + kCutlassTag));
  } else {
    d.bad("CUTLASS", why);
  }

  // GPU
  r = run_process({"nvidia-smi", "--query-gpu=name,compute_cap,driver_version,memory.total", "--format=csv,noheader"},
                  quick);
  if (r.ok() && !first_line(r.output).empty()) {
    std::istringstream in(r.output);
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty()) d.ok("GPU", line);
    }
  } else {
    d.bad("GPU", fmt::format("nvidia-smi {}: no NVIDIA GPU visible. discover and realize --compile-only work without "
                             "one; verification, tuning and compose's end-to-end check need an H100 (sm90a) or A100 "
                             "(sm80)",
                             r.started ? r.describe() : "not found"));
  }
  d.note("arch", fmt::format("{} (FACT_ARCH or detected)", env::arch()));

  // Python + torch
  const std::string python = env::python();
  ProcessOptions py = quick;
  const std::string python_dir = (fs::path(source_dir()) / "python").string();
  const std::string existing = env_raw("PYTHONPATH").value_or("");
  py.env["PYTHONPATH"] = existing.empty() ? python_dir : python_dir + ":" + existing;
  r = run_process({python, "-c",
                   "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda' if "
                   "torch.cuda.is_available() else 'no-cuda')"},
                  py);
  if (r.ok()) {
    d.ok("python", fmt::format("{}: {}", python, first_line(r.output)));
  } else if (!r.started) {
    d.bad("python", fmt::format("'{}' {}: install python3 (>= 3.10) or set FACT_PYTHON", python, r.error));
  } else {
    std::string last;
    std::istringstream in(r.output);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) last = line;
    }
    d.bad("python", fmt::format("{} cannot import torch ({}): pip install torch (CUDA build on the GPU machine)",
                                python, last.empty() ? r.describe() : last));
  }
  r = run_process({python, "-c", "import fact.capture"}, py);
  if (r.ok()) {
    d.ok("fact.py", fmt::format("python package importable from {}", python_dir));
  } else {
    d.bad("fact.py", fmt::format("'import fact.capture' failed from {}: the FACT python package is incomplete",
                                 python_dir));
  }

  // Registry
  const std::string reg = Registry::default_path();
  std::error_code ec;
  if (!fs::exists(reg, ec)) {
    d.note("registry", fmt::format("{} (not created yet; realize creates it)", reg));
  } else {
    try {
      Registry registry(reg);
      d.ok("registry", fmt::format("{} (schema version {})", reg, registry.schema_version()));
    } catch (const std::exception& e) {
      d.bad("registry", fmt::format("{}", e.what()));
    }
  }
  d.note("jobs", fmt::format("{} parallel nvcc jobs (FACT_JOBS or memory-aware default)", env::jobs()));

  if (d.missing) {
    fmt::print("{} thing(s) missing; see above for how to get each.\n", d.missing);
    return 1;
  }
  fmt::print("everything FACT needs is present.\n");
  return 0;
}

}  // namespace

void register_env(CLI::App& app, int* exit_code) {
  CLI::App* env_cmd = app.add_subcommand("env", "Print the FACT_ environment knobs, their values and defaults");
  env_cmd->callback([exit_code] { *exit_code = print_env(); });
  CLI::App* doc = app.add_subcommand("doctor", "Check nvcc, CUTLASS, GPU, python/torch and say how to get what is "
                                               "missing");
  doc->callback([exit_code] { *exit_code = doctor(); });
}

}  // namespace fact::cli
