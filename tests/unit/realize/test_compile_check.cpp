// Compile check: one emitted variant per kernel family goes through the real
// nvcc + CUTLASS into a throw-away cache, and the library's host-side ABI is
// exercised (name, ABI version, can_implement rejections) without a GPU.
// Skips (saying why) where nvcc or CUTLASS is missing. ~1 min per sm90 family
// on 2 cores, so it is ONE test that compiles one translation unit at a time.
#include <gtest/gtest.h>

#include <dlfcn.h>

#include <cstdlib>

#include "fact/build.hpp"
#include "fact/emit.hpp"
#include "fact/kernel_abi.h"
#include "realize_test_util.hpp"

namespace fact {
namespace {

struct Library {
  void* handle = nullptr;
  explicit Library(const std::string& path) { handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL); }
  ~Library() {
    if (handle) ::dlclose(handle);
  }
  template <class F>
  F* fn(const char* name) {
    return reinterpret_cast<F*>(::dlsym(handle, name));
  }
};

TEST(CompileCheck, OneVariantPerFamilyCompilesAndExportsTheAbi) {
  std::string why;
  auto tc = resolve_toolchain(&why);
  if (!tc) GTEST_SKIP() << "nvcc or CUTLASS missing, compile check skipped: " << why;
  if (const char* skip = std::getenv("FACT_SKIP_COMPILE_CHECK"); skip && std::string(skip) == "1")
    GTEST_SKIP() << "FACT_SKIP_COMPILE_CHECK=1";
  const std::vector<std::string> names{
      // promoted mainloop + scaled fp16 split pre-pass + stream-K + bias EVT
      "gemm_sm90_f16x3_f32_128x128x64_c1x1_coop_streamk_sauto_tt_bias",
      // plain tf32 wgmma on fp32 operands, C epilogue, cluster 2x1
      "gemm_sm90_tf32_f32_128x128x32_c2x1_coop_persistent_sauto_tt_c",
      "gemm_sm80_tf32x3_f32_128x128x16_c1x1_mstage_dp_s4_tn_bias",
      "gemm_sm80_f32_f32_128x128x8_c1x1_simt_splitk4_s3_nn_none",
  };
  std::vector<CompileJob> jobs;
  for (const auto& n : names) {
    auto v = parse_variant_name(n);
    ASSERT_TRUE(v.has_value()) << n;
    jobs.push_back({n, emit_variant_source(*v), nvcc_flags(v->arch, "sm90a")});
  }
  TempDir t;
  auto results = compile_all(*tc, (t.path / "cache").string(), jobs, 1, [](const CompileResult& r, int i, int n) {
    std::fprintf(stderr, "[compile check] %d/%d %s %s (%.0f s)\n", i, n, r.ok ? "ok" : "FAILED", r.name.c_str(),
                 r.seconds);
  });
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok) << r.name << " failed to compile:\n" << r.reason << "\nlog: " << r.log_path;
    Library lib(r.library);
    ASSERT_NE(lib.handle, nullptr) << ::dlerror();
    auto name = lib.fn<const char*()>("fact_variant_name");
    auto abi = lib.fn<int()>("fact_abi_version");
    auto can = lib.fn<int(const FactGemmProblem*)>("fact_gemm_can_implement");
    auto last_error = lib.fn<const char*()>("fact_last_error");
    ASSERT_TRUE(name && abi && can && last_error) << r.name << " lacks an ABI symbol";
    EXPECT_EQ(std::string(name()), r.name);
    EXPECT_EQ(abi(), FACT_KERNEL_ABI_VERSION);
    EXPECT_NE(can(nullptr), 0);
    // A problem with a zero extent is rejected with a reason, on the host.
    FactGemmProblem p{};
    p.batch = 1, p.m = 0, p.n = 64, p.k = 64;
    EXPECT_NE(can(&p), 0) << r.name;
    EXPECT_NE(std::string(last_error()).find("positive"), std::string::npos) << last_error();
  }
}

}  // namespace
}  // namespace fact
