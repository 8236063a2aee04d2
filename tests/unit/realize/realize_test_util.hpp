// Helpers shared by the realize unit tests: temporary folders, scripts,
// environment variables, golden sources, a fake toolchain for run_realize.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "fact/realize.hpp"

namespace fact {
namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("fact_realize_test_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(counter()++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  static int& counter() {
    static int c = 0;
    return c;
  }
};

inline void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

inline fs::path script(const fs::path& p, const std::string& body) {
  write(p, "#!/bin/sh\n" + body);
  fs::permissions(p, fs::perms::owner_all);
  return p;
}

inline std::string data_file(const std::string& name) {
  return std::string(FACT_TEST_DATA_DIR) + "/unit/realize/data/" + name;
}

// Sets environment variables for the guard's lifetime.
struct EnvGuard {
  std::map<std::string, std::optional<std::string>> saved;
  void set(const std::string& k, const std::string& v) {
    if (!saved.count(k)) {
      const char* old = std::getenv(k.c_str());
      saved[k] = old ? std::optional<std::string>(old) : std::nullopt;
    }
    ::setenv(k.c_str(), v.c_str(), 1);
  }
  ~EnvGuard() {
    for (const auto& [k, v] : saved) v ? (void)::setenv(k.c_str(), v->c_str(), 1) : (void)::unsetenv(k.c_str());
  }
};

// Compares a generated source with tests/golden/<name>.cu byte for byte
// (FACT_UPDATE_GOLDEN=1 rewrites the file instead); a generated source has every
// placeholder filled and names its variant.
inline void check_golden(const std::string& name, const std::string& source) {
  const fs::path dir = fs::path(FACT_TEST_DATA_DIR) / "golden";
  const fs::path path = dir / (name + ".cu");
  if (const char* update = std::getenv("FACT_UPDATE_GOLDEN"); update && std::string(update) == "1") {
    fs::create_directories(dir);
    std::ofstream(path, std::ios::binary) << source;
    return;
  }
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in.good()) << "missing golden " << path << " (run with FACT_UPDATE_GOLDEN=1 to create it)";
  std::ostringstream expected;
  expected << in.rdbuf();
  EXPECT_EQ(source, expected.str()) << "generated source of " << name
                                    << " changed; review and rerun with FACT_UPDATE_GOLDEN=1";
  EXPECT_EQ(source.find("${"), std::string::npos) << "unfilled placeholder in " << name;
  EXPECT_NE(source.find("\"" + name + "\""), std::string::npos);
}

// A fake toolchain for run_realize under `dir`, set in `env`: CUTLASS headers, an
// nvcc that appends each source to dir/nvcc_calls, runs `nvcc_check` (shell lines
// that see $src) and writes a stub library, and a python that runs
// data/fake_worker.py with `worker_rules`.
inline void fake_realize_toolchain(const fs::path& dir, EnvGuard& env, const std::string& worker_rules, int jobs,
                                   const std::string& nvcc_check = "") {
  write(dir / "cutlass" / "include" / "cutlass" / "cutlass.h", "// fake\n");
  write(dir / "cutlass" / "include" / "cutlass" / "version.h", "#define CUTLASS_MAJOR 4\n");
  script(dir / "nvcc",
         "if [ \"$1\" = --version ]; then echo 'Cuda compilation tools, release 12.9, V12.9.0'; exit 0; fi\n"
         "out=; prev=; for a in \"$@\"; do [ \"$prev\" = -o ] && out=$a; prev=$a; src=$a; done\n"
         "echo \"$src\" >> " + (dir / "nvcc_calls").string() + "\n" + nvcc_check +
         "echo lib > \"$out\"\n");
  script(dir / "python", "shift 2\nexec python3 " + data_file("fake_worker.py") + " \"$@\"\n");
  env.set("FACT_NVCC", (dir / "nvcc").string());
  env.set("CUTLASS_DIR", (dir / "cutlass").string());
  env.set("FACT_CACHE_DIR", (dir / "cache").string());
  env.set("FACT_PYTHON", (dir / "python").string());
  env.set("FACT_JOBS", std::to_string(jobs));
  env.set("FAKE_WORKER_RULES", worker_rules);
}

// Writes dir/plan.json: `patterns` on sm90a at tolerance 1e-4 over an empty
// graph (dir/graph.json). Returns the options that realize it into
// dir/realized.json, recording in dir/registry.sqlite.
inline RealizeOptions write_fake_plan(const fs::path& dir, const nlohmann::json& patterns) {
  using nlohmann::json;
  write(dir / "graph.json", R"({"fact_ir": 1, "tensors": {}, "nodes": [], "outputs": []})");
  json p = {{"fact_plan", 1}, {"ir", "graph.json"}, {"arch", "sm90a"}, {"tolerance", 1e-4},
            {"patterns", patterns}, {"unmatched", json::array()}, {"rejections", json::array()}};
  write(dir / "plan.json", p.dump(2));
  RealizeOptions o;
  o.plan_path = (dir / "plan.json").string();
  o.output_path = (dir / "realized.json").string();
  o.registry_path = (dir / "registry.sqlite").string();
  return o;
}

}  // namespace fact
