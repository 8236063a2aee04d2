// Compile check of the RMSNorm variants (templates/layernorm.cuh with kRmsNorm, and the
// sm90 operand-image writer of layernorm_image.cuh): one emitted variant goes through the
// real nvcc into a throw-away cache and its host-side ABI refuses what an RMSNorm cannot
// take. Skips (saying why) where nvcc or CUTLASS is missing, or FACT_SKIP_COMPILE_CHECK=1.
#include <gtest/gtest.h>

#include <dlfcn.h>

#include <cstdlib>

#include "fact/build.hpp"
#include "fact/kernel_abi.h"
#include "fact/pattern_realizer.hpp"
#include "realize_test_util.hpp"

namespace fact {
namespace {

TEST(CompileCheck, RmsNormVariantCompilesAndRefusesABias) {
  std::string why;
  auto tc = resolve_toolchain(&why);
  if (!tc) GTEST_SKIP() << "nvcc or CUTLASS missing, compile check skipped: " << why;
  if (const char* env = std::getenv("FACT_SKIP_COMPILE_CHECK"); env && std::string(env) == "1")
    GTEST_SKIP() << "FACT_SKIP_COMPILE_CHECK=1";
  const auto v = *parse_layernorm_variant_name("rmsnorm_f32_c1024_w4_v4_res_sum");
  TempDir t;
  auto results = compile_all(*tc, (t.path / "cache").string(),
                             {{v.name(), emit_layernorm_source(v, "sm90a"), layernorm_nvcc_flags("sm90a")}}, 1);
  ASSERT_EQ(results.size(), 1u);
  ASSERT_TRUE(results[0].ok) << v.name() << " failed to compile:\n" << results[0].reason << "\nlog: " << results[0].log_path;
  void* lib = ::dlopen(results[0].library.c_str(), RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(lib, nullptr) << ::dlerror();
  auto sym = [&](const char* name) { return ::dlsym(lib, name); };
  auto name = reinterpret_cast<const char* (*)()>(sym("fact_variant_name"));
  auto can = reinterpret_cast<int (*)(const FactLayerNormProblem*)>(sym("fact_layernorm_can_implement"));
  auto image_can =
      reinterpret_cast<int (*)(const FactLayerNormProblem*, const char*)>(sym("fact_layernorm_image_can_implement"));
  auto formats = reinterpret_cast<const char* (*)()>(sym("fact_layernorm_image_formats"));
  auto last_error = reinterpret_cast<const char* (*)()>(sym("fact_last_error"));
  ASSERT_TRUE(name && can && image_can && formats && last_error) << "the rmsnorm library lacks an ABI symbol";
  EXPECT_EQ(std::string(name()), v.name());
  std::string expected;
  for (const std::string& f : split_image_formats()) expected += (expected.empty() ? "" : ";") + f;
  EXPECT_EQ(formats(), expected) << "an RMSNorm writes the next GEMM's operand image as a LayerNorm does";

  auto addr = [](int mib) { return reinterpret_cast<void*>(static_cast<uintptr_t>(mib) << 20); };
  FactLayerNormProblem p{};
  p.rows = 64, p.cols = 1024, p.eps = 1e-6f;
  p.x = addr(1), p.residual = addr(2), p.sum = addr(3), p.y = addr(4), p.weight = addr(5);
  p.x_row_stride = p.residual_row_stride = p.sum_row_stride = p.y_row_stride = 1024;
  EXPECT_EQ(can(&p), 0) << last_error();
  p.bias = addr(6);
  EXPECT_NE(can(&p), 0);
  EXPECT_NE(std::string(last_error()).find("an RMSNorm variant has no bias"), std::string::npos) << last_error();
  const std::string f16x3 = split_image_formats().front();
  EXPECT_NE(image_can(&p, f16x3.c_str()), 0) << "the image path runs the same problem checks";
  p.bias = nullptr, p.y = nullptr, p.y_row_stride = 0;
  EXPECT_EQ(image_can(&p, f16x3.c_str()), 0) << last_error();
  ::dlclose(lib);
}

}  // namespace
}  // namespace fact
