// Kernel cache keys, the nvcc driver with a fake nvcc, and toolchain errors.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "fact/build.hpp"
#include "fact/emit.hpp"
#include "fact/env.hpp"
#include "realize_test_util.hpp"

namespace fs = std::filesystem;

namespace fact {
namespace {

// A fake nvcc: answers --version, appends one line per compile to $dir/calls,
// and fails sources that contain FAIL_ME with an nvcc-style error.
fs::path fake_nvcc(const fs::path& dir) {
  return script(dir / "nvcc", "if [ \"$1\" = --version ]; then echo 'Cuda compilation tools, release 12.9, V12.9.0'; exit 0; fi\n"
                              "out=; prev=; for a in \"$@\"; do [ \"$prev\" = -o ] && out=$a; prev=$a; src=$a; done\n"
                              "echo call >> " + (dir / "calls").string() + "\n"
                              "if grep -q FAIL_ME \"$src\"; then echo \"$src(3): error: identifier \\\"FAIL_ME\\\" is undefined\"; "
                              "echo '1 error detected'; exit 2; fi\n"
                              "echo lib > \"$out\"\n");
}

int calls(const fs::path& dir) {
  std::ifstream in(dir / "calls");
  int n = 0;
  std::string line;
  while (std::getline(in, line)) ++n;
  return n;
}

Toolchain fake_toolchain(const fs::path& nvcc) {
  Toolchain tc;
  tc.nvcc = nvcc.string();
  tc.nvcc_version = "Cuda compilation tools, release 12.9, V12.9.0";
  tc.cutlass_dir = "/nonexistent/cutlass";
  tc.cutlass_commit = "dcf215af68a2d08d305076c152a06f201728cd53";
  tc.source_dir = FACT_SOURCE_DIR;
  return tc;
}

TEST(Build, CacheKeyIsStableAndSensitiveToEveryInput) {
  const std::vector<std::string> flags = nvcc_flags(KernelArch::Sm90, "sm90a");
  const std::string base = kernel_cache_key("c1", "nvcc 13.0", flags, "src", "tmpl");
  EXPECT_EQ(base, kernel_cache_key("c1", "nvcc 13.0", flags, "src", "tmpl"));
  EXPECT_EQ(base.size(), 32u);  // 128-bit hex
  EXPECT_NE(base, kernel_cache_key("c2", "nvcc 13.0", flags, "src", "tmpl"));
  EXPECT_NE(base, kernel_cache_key("c1", "nvcc 13.1", flags, "src", "tmpl"));
  EXPECT_NE(base, kernel_cache_key("c1", "nvcc 13.0", nvcc_flags(KernelArch::Sm80, "sm90a"), "src", "tmpl"));
  auto more = flags;
  more.push_back("-lineinfo");
  EXPECT_NE(base, kernel_cache_key("c1", "nvcc 13.0", more, "src", "tmpl"));
  EXPECT_NE(base, kernel_cache_key("c1", "nvcc 13.0", flags, "src ", "tmpl"));
  EXPECT_NE(base, kernel_cache_key("c1", "nvcc 13.0", flags, "src", "tmpl2"));
  // Field boundaries matter: moving a character between fields changes the key.
  EXPECT_NE(kernel_cache_key("c1", "nvcc", flags, "ab", "c"), kernel_cache_key("c1", "nvcc", flags, "a", "bc"));
}

TEST(Build, TemplatesDigestTracksTheHeadersTheSourceIncludes) {
  TempDir t;
  write(t.path / "templates" / "a.cuh", "// a\n#include \"fact/kernel_abi.h\"\n#include <cute/tensor.hpp>\n");
  write(t.path / "templates" / "b.cuh", "// b\n");
  write(t.path / "templates" / "notes.txt", "ignored\n");
  write(t.path / "include" / "fact" / "kernel_abi.h", "// abi\n");
  const std::string source = "#include \"a.cuh\"\n  #  include \"kernel_forward.h\"  // a CUTLASS example header\n";
  const std::string d1 = templates_digest(t.path.string(), source);
  EXPECT_EQ(d1, templates_digest(t.path.string(), source));
  write(t.path / "templates" / "b.cuh", "// b, edited: a.cuh does not include it\n");
  write(t.path / "templates" / "notes.txt", "still ignored\n");
  EXPECT_EQ(d1, templates_digest(t.path.string(), source));
  write(t.path / "templates" / "a.cuh", "// a, edited\n#include \"fact/kernel_abi.h\"\n");
  const std::string d2 = templates_digest(t.path.string(), source);
  EXPECT_NE(d1, d2);
  write(t.path / "include" / "fact" / "kernel_abi.h", "// abi v2 (reached through a.cuh)\n");
  const std::string d3 = templates_digest(t.path.string(), source);
  EXPECT_NE(d2, d3);
  // A source that includes b.cuh instead sees b's edits.
  const std::string other = "#include \"b.cuh\"\n";
  const std::string b1 = templates_digest(t.path.string(), other);
  write(t.path / "templates" / "b.cuh", "// b, edited again\n");
  EXPECT_NE(b1, templates_digest(t.path.string(), other));
  EXPECT_EQ(d3, templates_digest(t.path.string(), source));
}

TEST(Build, FlagsPerFamily) {
  auto has = [](const std::vector<std::string>& f, const std::string& x) {
    return std::find(f.begin(), f.end(), x) != f.end();
  };
  auto sm90 = nvcc_flags(KernelArch::Sm90, "sm90a");
  for (const char* f : {"-std=c++17", "-O3", "-DNDEBUG", "--expt-relaxed-constexpr", "-Xcompiler=-fPIC", "-shared",
                        "-gencode=arch=compute_90a,code=sm_90a"})
    EXPECT_TRUE(has(sm90, f)) << f;
  EXPECT_TRUE(has(nvcc_flags(KernelArch::Sm90Split, "sm90a"), "-gencode=arch=compute_90a,code=sm_90a"));
  EXPECT_TRUE(has(nvcc_flags(KernelArch::Sm80, "sm80"), "-gencode=arch=compute_80,code=sm_80"));
  // sm_80 SASS does not load on Hopper: the fallback family targets the GPU it runs on.
  EXPECT_TRUE(has(nvcc_flags(KernelArch::Sm80, "sm90a"), "-gencode=arch=compute_80,code=sm_90"));
  Toolchain tc = fake_toolchain("/x/nvcc");
  auto argv = nvcc_command(tc, sm90, "/tmp/k.cu", "/tmp/libk.so");
  EXPECT_EQ(argv.front(), "/x/nvcc");
  EXPECT_TRUE(has(argv, "-I/nonexistent/cutlass/include"));
  EXPECT_TRUE(has(argv, "-I/nonexistent/cutlass/tools/util/include"));
  EXPECT_TRUE(has(argv, std::string("-I") + FACT_SOURCE_DIR + "/templates"));
  EXPECT_TRUE(has(argv, std::string("-I") + FACT_SOURCE_DIR + "/include"));
  EXPECT_EQ(argv.back(), "/tmp/k.cu");
}

TEST(Build, CompileFailureIsCapturedWithReasonAndCacheHitsCompileNothing) {
  TempDir t;
  const Toolchain tc = fake_toolchain(fake_nvcc(t.path));
  const auto flags = nvcc_flags(KernelArch::Sm80, "sm80");
  std::vector<CompileJob> jobs{{"gemm_good", "int ok;\n", flags}, {"gemm_bad", "int x = FAIL_ME;\n", flags}};
  int progress_calls = 0;
  auto results = compile_all(tc, (t.path / "cache").string(), jobs, 2,
                             [&](const CompileResult&, int, int total) {
                               ++progress_calls;
                               EXPECT_EQ(total, 2);
                             });
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(progress_calls, 2);
  EXPECT_TRUE(results[0].ok);
  EXPECT_FALSE(results[0].cached);
  EXPECT_TRUE(fs::exists(results[0].library));
  EXPECT_EQ(fs::path(results[0].library).filename(), "libgemm_good.so");
  EXPECT_EQ(fs::path(results[0].library).parent_path().filename(), results[0].key);
  EXPECT_TRUE(fs::exists(results[0].log_path));
  EXPECT_TRUE(fs::exists(fs::path(results[0].library).parent_path() / "gemm_good.cu"));
  EXPECT_FALSE(results[1].ok);
  EXPECT_NE(results[1].reason.find("FAIL_ME"), std::string::npos) << results[1].reason;
  EXPECT_NE(results[1].reason.find("error"), std::string::npos);
  EXPECT_EQ(calls(t.path), 2);
  // No temporary files are left behind.
  for (const auto& e : fs::recursive_directory_iterator(t.path / "cache"))
    EXPECT_EQ(e.path().string().find(".tmp-"), std::string::npos) << e.path();

  auto again = compile_all(tc, (t.path / "cache").string(), jobs, 2);
  EXPECT_EQ(calls(t.path), 2) << "a cache hit (or a recorded deterministic failure) must not run nvcc";
  EXPECT_TRUE(again[0].ok && again[0].cached);
  EXPECT_EQ(again[0].library, results[0].library);
  EXPECT_FALSE(again[1].ok);
  EXPECT_TRUE(again[1].cached);
  EXPECT_EQ(again[1].reason, results[1].reason);

  jobs[0].source = "int ok2;\n";  // new source -> new key -> one compile
  auto changed = compile_all(tc, (t.path / "cache").string(), jobs, 1);
  EXPECT_EQ(calls(t.path), 3);
  EXPECT_NE(changed[0].key, results[0].key);
}

TEST(Build, MissingNvccSaysHowToGetIt) {
  TempDir t;
  const Toolchain tc = fake_toolchain(t.path / "no-such-nvcc");
  auto r = compile_all(tc, (t.path / "cache").string(), {{"gemm_x", "int a;", {"-O3"}}}, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_FALSE(r[0].ok);
  EXPECT_NE(r[0].reason.find("could not be started"), std::string::npos) << r[0].reason;

  ::setenv("FACT_NVCC", (t.path / "no-such-nvcc").c_str(), 1);
  std::string why;
  auto resolved = resolve_toolchain(&why);
  ::unsetenv("FACT_NVCC");
  EXPECT_FALSE(resolved.has_value());
  EXPECT_NE(why.find("nvcc"), std::string::npos) << why;
  EXPECT_NE(why.find("FACT_NVCC"), std::string::npos) << why;
  EXPECT_NE(why.find("CUDA toolkit"), std::string::npos) << why;
}

TEST(Build, FirstErrorLines) {
  const std::string log = "warning: a\nx.cu(1): error: first\nnote\nx.cu(2): error: second\n";
  EXPECT_EQ(first_error_lines(log, 1), "x.cu(1): error: first");
  EXPECT_EQ(first_error_lines(log, 4), "x.cu(1): error: first\nx.cu(2): error: second");
  EXPECT_EQ(first_error_lines("killed\n", 2), "killed\n");
}

}  // namespace
}  // namespace fact
